"""Model verification: every bad artefact is refused with the failed check named."""

from __future__ import annotations

import numpy as np
import pytest

from common.artefact import promote
from common.features import N_OBS, OBSERVATION_FEATURES
from common.policy import init_weights, numpy_forward
from common.store import LocalStore
from tests.trader_svc.helpers import good_meta, save_good, save_raw
from trader_svc.models import ModelRejected, load_champion, load_version

P = "pol"


@pytest.fixture()
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def rejected(store, version, **kw) -> ModelRejected:
    with pytest.raises(ModelRejected) as ei:
        load_version(store, P, version, **kw)
    return ei.value


def test_good_model_loads_and_serves_like_the_reference(store) -> None:
    ref = save_good(store, P, "v1", seed=3)
    m = load_version(store, P, "v1", expect_sha256=ref.sha256, uri=ref.uri)
    assert m.version == "v1" and m.sha256 == ref.sha256 and m.timings_s["total_s"] > 0
    x = np.random.default_rng(0).normal(size=(32, N_OBS)).astype(np.float32)
    np.testing.assert_allclose(m.net.logits(x), numpy_forward(init_weights(3), x), atol=1e-5)
    assert load_champion(store, P) is None
    promote(store, P, "v1")
    assert load_champion(store, P).version == "v1"


def test_sha256_mismatch_announced_and_in_meta(store) -> None:
    save_good(store, P, "v1")
    e = rejected(store, "v1", expect_sha256="0" * 64)
    assert e.kind == "sha256" and "announced" in e.reason
    save_raw(store, P, "v2", init_weights(1), sha="f" * 64)  # meta.json lies about the file
    e = rejected(store, "v2")
    assert e.kind == "sha256" and "meta.json" in e.reason
    # a file altered after publication
    save_good(store, P, "v3")
    store.put(f"models/{P}/v3/model.safetensors", store.get(f"models/{P}/v3/model.safetensors")[:-4] + b"\0\0\0\0")
    assert rejected(store, "v3").kind == "sha256"


def test_wrong_feature_order_and_feature_set(store) -> None:
    meta = good_meta()
    feats = list(OBSERVATION_FEATURES)
    feats[0], feats[1] = feats[1], feats[0]
    save_raw(store, P, "order", init_weights(0), meta={**meta, "features": feats})
    e = rejected(store, "order")
    assert e.kind == "features" and "order" in e.reason
    save_raw(store, P, "set", init_weights(0), meta={**meta, "feature_set": "market-v0"})
    assert rejected(store, "set").kind == "stale"  # another feature set: trained on other data (stale)
    save_raw(store, P, "fewer", init_weights(0), meta={**meta, "features": feats[:15]})
    assert rejected(store, "fewer").kind == "features"


def test_wrong_shape_and_architecture(store) -> None:
    w = init_weights(0)
    w["actor.fc2.weight"] = np.zeros((64, 32), np.float32)
    save_raw(store, P, "shape", w)
    e = rejected(store, "shape")
    assert e.kind == "shape" and "actor.fc2.weight" in e.reason
    small = init_weights(0, hidden=32)  # a consistent 32-wide net whose meta claims 64
    save_raw(store, P, "hidden", small)
    assert rejected(store, "hidden").kind == "shape"
    w2 = init_weights(0)
    del w2["actor.out.bias"]
    save_raw(store, P, "names", w2)
    assert rejected(store, "names").kind == "shape"
    arch = {**good_meta()["architecture"], "type": "transformer"}
    save_raw(store, P, "arch", init_weights(0), meta={**good_meta(), "architecture": arch})
    assert rejected(store, "arch").kind == "architecture"


def test_nan_and_inf_weights(store) -> None:
    w = init_weights(0)
    w["actor.fc1.weight"][3, 4] = np.nan
    save_raw(store, P, "nan", w)
    e = rejected(store, "nan")
    assert e.kind == "non-finite" and "actor.fc1.weight" in e.reason
    w = init_weights(0)
    w["actor.out.bias"][0] = np.inf
    save_raw(store, P, "inf", w)
    assert rejected(store, "inf").kind == "non-finite"


def test_missing_and_not_safetensors(store) -> None:
    assert rejected(store, "nope").kind == "missing"
    ptr = save_raw(store, P, "junk", init_weights(0))
    store.put(f"models/{P}/junk/model.safetensors", b"not a safetensors file at all")
    import hashlib
    import json

    meta = json.loads(store.get(f"models/{P}/junk/meta.json"))
    meta["sha256"] = hashlib.sha256(b"not a safetensors file at all").hexdigest()
    store.put(f"models/{P}/junk/meta.json", json.dumps(meta).encode())
    assert rejected(store, "junk").kind == "format"
    assert ptr["uri"].endswith("junk/model.safetensors")
    assert rejected(store, "..").kind == "missing"


def test_model_trained_on_market_v2_is_refused(store) -> None:
    """market-v3 changed the features' values (and added two): a market-v2 model is refused by feature set."""
    meta = good_meta()
    v2_features = [f for f in OBSERVATION_FEATURES if f not in ("binance_stale", "poly_stale")]
    save_raw(store, P, "v2", init_weights(0), meta={**meta, "feature_set": "market-v2", "features": v2_features})
    e = rejected(store, "v2")
    assert e.kind == "stale" and "market-v2" in e.reason and "market-v3" in e.reason
