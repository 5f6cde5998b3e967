import hashlib
import json

import msgpack
import numpy as np
import pytest

from common import artefact, keys
from common.policy import init_weights
from common.store import LocalStore


def test_round_trip_promote_rollback_and_event(tmp_path, r):
    store = LocalStore(tmp_path)
    w1, w2 = init_weights(1), init_weights(2)
    ref1 = artefact.save_model(store, "pol", w1, {"algorithm": "awbc"}, report_html="<html></html>")
    ref2 = artefact.save_model(store, "pol", w2, {"algorithm": "awbc"})
    assert artefact.list_versions(store, "pol") == sorted([ref1.version, ref2.version])
    data = store.get(f"models/pol/{ref1.version}/model.safetensors")
    assert hashlib.sha256(data).hexdigest() == ref1.sha256
    got, meta = artefact.load_model(store, "pol", ref1.version)
    assert meta["sha256"] == ref1.sha256 and meta["uri"].endswith("model.safetensors")
    assert all(np.array_equal(got[k], w1[k]) for k in w1)
    assert store.exists(f"models/pol/{ref1.version}/report.html")
    assert r.xlen(keys.EVENTS_STREAM) == 0  # saving never announces
    artefact.promote(store, "pol", ref1.version, r)
    artefact.promote(store, "pol", ref2.version, r)
    assert artefact.champion(store, "pol")["version"] == ref2.version
    ptr = artefact.rollback(store, "pol", r)
    assert ptr["version"] == ref1.version and artefact.champion(store, "pol")["sha256"] == ref1.sha256
    ev = [msgpack.unpackb(f[keys.PAYLOAD_FIELD]) for _, f in r.xrange(keys.EVENTS_STREAM)]
    assert [e["version"] for e in ev] == [ref1.version, ref2.version, ref1.version]
    assert ev[0]["type"] == "model-updated" and ev[0]["v"] == 1 and ev[0]["policy"] == "pol"
    assert set(ev[0]) == {"v", "type", "policy", "version", "uri", "sha256", "ts"}
    w_champ, _ = artefact.load_model(store, "pol")
    assert np.array_equal(w_champ["actor.out.weight"], w1["actor.out.weight"])


def test_sha_mismatch_and_bad_shapes_rejected(tmp_path):
    store = LocalStore(tmp_path)
    ref = artefact.save_model(store, "pol", init_weights(0), {})
    key = f"models/pol/{ref.version}/model.safetensors"
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF  # flip one bit of a weight
    store.put(key, bytes(data))
    with pytest.raises(artefact.ModelError, match="sha256"):
        artefact.load_model(store, "pol", ref.version)
    with pytest.raises(artefact.ModelError, match="sha256"):
        artefact.promote(store, "pol", ref.version)
    assert artefact.champion(store, "pol") is None
    # a well-formed file of the wrong architecture is refused too
    bad = dict(init_weights(0))
    bad["actor.fc1.weight"] = np.zeros((64, 17), np.float32)
    with pytest.raises(artefact.ModelError):
        artefact.parse_weights(artefact.weights_bytes(bad))
    with pytest.raises(artefact.ModelError, match="expected"):
        artefact.load_model(store, "pol", ref.version, expect_sha256="0" * 64)
    # versions are immutable
    with pytest.raises(artefact.ModelError, match="exists"):
        artefact.save_model(store, "pol", init_weights(0), {}, version=ref.version)
    assert json.loads(store.get(f"models/pol/{ref.version}/meta.json"))["version"] == ref.version


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"version": "v1"}', b'{"sha256": "ab"}'])
def test_unreadable_champion_pointer_is_reported_and_an_explicit_promotion_quarantines_it(tmp_path, body):
    store = LocalStore(tmp_path)
    ref = artefact.save_model(store, "pol", init_weights(0), {})
    store.put("models/pol/champion.json", body)
    with pytest.raises(artefact.ChampionError, match="champion.json"):
        artefact.champion(store, "pol")
    assert artefact.promote(store, "pol", ref.version)["version"] == ref.version  # the operator's explicit choice
    assert artefact.champion(store, "pol")["sha256"] == ref.sha256
    (q,) = [i.key for i in store.list("quarantine/models/pol/")]
    assert store.get(q) == body


def test_serving_verification_needs_no_framework_and_checks_weights(tmp_path):
    """The contract is read without torch or the trainer: ``fetch_verified`` alone returns checked weights, and
    refuses a NaN weight (``non-finite``) and an oversized file before reading it (``size``)."""
    import subprocess
    import sys

    code = (
        "import sys, common.artefact; "
        "print(sorted({'torch', 'mlx', 'trainer_svc', 'trader_svc'} & {m.split('.')[0] for m in sys.modules}))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    from common.policy import architecture, meta_features

    store = LocalStore(tmp_path)
    meta = {**meta_features(), "architecture": architecture()}
    ref = artefact.save_model(store, "pol", init_weights(0), meta)
    art = artefact.fetch_verified(store, "pol", ref.version, expect_sha256=ref.sha256, uri=ref.uri)
    assert art.sha256 == ref.sha256 and art.hidden == 64 and set(art.timings_s) == {"download_s", "verify_s"}
    assert all(np.array_equal(art.weights[k], v) for k, v in init_weights(0).items())
    with pytest.raises(artefact.ModelRejected) as e:
        artefact.fetch_verified(store, "pol", ref.version, max_bytes=100)
    assert e.value.kind == "size"
    nan = init_weights(0)
    nan["actor.fc1.bias"][3] = np.nan
    data = artefact.weights_bytes(nan)  # written around save_model, which refuses it
    store.put("models/pol/v-nan/model.safetensors", data)
    sha = hashlib.sha256(data).hexdigest()
    store.put("models/pol/v-nan/meta.json", json.dumps({**meta, "sha256": sha}).encode())
    with pytest.raises(artefact.ModelRejected) as e:
        artefact.fetch_verified(store, "pol", "v-nan")
    assert e.value.kind == "non-finite" and "actor.fc1.bias" in e.value.reason
