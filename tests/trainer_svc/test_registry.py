import hashlib
import json

import msgpack
import numpy as np
import pytest

from common import keys
from common.policy import init_weights
from common.store import LocalStore
from trainer_svc import registry


def test_round_trip_promote_rollback_and_event(tmp_path, r):
    store = LocalStore(tmp_path)
    w1, w2 = init_weights(1), init_weights(2)
    ref1 = registry.save_model(store, "pol", w1, {"algorithm": "awbc"}, report_html="<html></html>")
    ref2 = registry.save_model(store, "pol", w2, {"algorithm": "awbc"})
    assert registry.list_versions(store, "pol") == sorted([ref1.version, ref2.version])
    data = store.get(f"models/pol/{ref1.version}/model.safetensors")
    assert hashlib.sha256(data).hexdigest() == ref1.sha256
    got, meta = registry.load_model(store, "pol", ref1.version)
    assert meta["sha256"] == ref1.sha256 and meta["uri"].endswith("model.safetensors")
    assert all(np.array_equal(got[k], w1[k]) for k in w1)
    assert store.exists(f"models/pol/{ref1.version}/report.html")
    assert r.xlen(keys.EVENTS_STREAM) == 0  # saving never announces
    registry.promote(store, "pol", ref1.version, r)
    registry.promote(store, "pol", ref2.version, r)
    assert registry.champion(store, "pol")["version"] == ref2.version
    ptr = registry.rollback(store, "pol", r)
    assert ptr["version"] == ref1.version and registry.champion(store, "pol")["sha256"] == ref1.sha256
    ev = [msgpack.unpackb(f[keys.PAYLOAD_FIELD]) for _, f in r.xrange(keys.EVENTS_STREAM)]
    assert [e["version"] for e in ev] == [ref1.version, ref2.version, ref1.version]
    assert ev[0]["type"] == "model-updated" and ev[0]["v"] == 1 and ev[0]["policy"] == "pol"
    assert set(ev[0]) == {"v", "type", "policy", "version", "uri", "sha256", "ts"}
    w_champ, _ = registry.load_model(store, "pol")
    assert np.array_equal(w_champ["actor.out.weight"], w1["actor.out.weight"])


def test_sha_mismatch_and_bad_shapes_rejected(tmp_path):
    store = LocalStore(tmp_path)
    ref = registry.save_model(store, "pol", init_weights(0), {})
    key = f"models/pol/{ref.version}/model.safetensors"
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF  # flip one bit of a weight
    store.put(key, bytes(data))
    with pytest.raises(registry.ModelError, match="sha256"):
        registry.load_model(store, "pol", ref.version)
    with pytest.raises(registry.ModelError, match="sha256"):
        registry.promote(store, "pol", ref.version)
    assert registry.champion(store, "pol") is None
    # a well-formed file of the wrong architecture is refused too
    bad = dict(init_weights(0))
    bad["actor.fc1.weight"] = np.zeros((64, 17), np.float32)
    with pytest.raises(registry.ModelError):
        registry.parse_weights(registry.weights_bytes(bad))
    with pytest.raises(registry.ModelError, match="expected"):
        registry.load_model(store, "pol", ref.version, expect_sha256="0" * 64)
    # versions are immutable
    with pytest.raises(registry.ModelError, match="exists"):
        registry.save_model(store, "pol", init_weights(0), {}, version=ref.version)
    assert json.loads(store.get(f"models/pol/{ref.version}/meta.json"))["version"] == ref.version


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"version": "v1"}', b'{"sha256": "ab"}'])
def test_unreadable_champion_pointer_is_reported_and_an_explicit_promotion_quarantines_it(tmp_path, body):
    store = LocalStore(tmp_path)
    ref = registry.save_model(store, "pol", init_weights(0), {})
    store.put("models/pol/champion.json", body)
    with pytest.raises(registry.ChampionError, match="champion.json"):
        registry.champion(store, "pol")
    assert registry.promote(store, "pol", ref.version)["version"] == ref.version  # the operator's explicit choice
    assert registry.champion(store, "pol")["sha256"] == ref.sha256
    (q,) = [i.key for i in store.list("quarantine/models/pol/")]
    assert store.get(q) == body
