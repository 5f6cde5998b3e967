"""One training run over several markets pooled: data, splits, artefact and summary."""

import json

import pytest

from common.store import LocalStore
from trainer_svc.pipeline import JobParams, run_training


def test_pooled_markets_train_evaluate_and_save(tmp_path):
    store = LocalStore(tmp_path / "store")
    p = JobParams(market="AAA-5M, BBB-5M", synthetic=28_800, store_url=store.url, promote=False,
                  overrides={"epochs": 2})  # fmt: skip
    assert p.policy_name == "AAA-5M_BBB-5M"
    out = run_training(p)
    assert out["policy"] == "AAA-5M_BBB-5M" and not out["promoted"]
    data = out["data"]
    assert set(data["markets"]) == {"AAA-5M", "BBB-5M"} and data["n_states"] == 2 * 28_800
    assert data["labels_source"] in ("labeler_svc", "trainer_fallback")
    for split in ("train", "val", "holdout"):
        per = out["splits"][split]["windows_per_market"]
        assert per["AAA-5M"] > 0 and per["BBB-5M"] > 0 and sum(per.values()) == out["splits"][split]["windows"]
    meta = json.loads(store.get(f"models/AAA-5M_BBB-5M/{out['version']}/meta.json"))
    assert meta["data"]["market"] == "AAA-5M,BBB-5M" and meta["splits"]["holdout"]["windows"] == out["holdout"][
        "candidate"]["windows"]  # fmt: skip
    # what the monitor needs: the per-window hold-out PnL (its mean is the recorded one) and the state schema
    per = meta["holdout_window_pnl"]
    assert len(per) == meta["splits"]["holdout"]["windows"] and meta["state_schema"] == 2
    assert abs(sum(per) / len(per) - meta["holdout_metrics"]["pnl_per_window"]) < 1e-5


@pytest.mark.slow  # ~16 s: one real training run
def test_corrupt_champion_pointer_saves_the_model_reports_and_does_not_promote(tmp_path):
    from common import artefact

    store = LocalStore(tmp_path / "store")
    store.put("models/AAA-5M/champion.json", b"\x00garbage{")
    p = JobParams(market="AAA-5M", synthetic=28_800, store_url=store.url, overrides={"epochs": 1})
    out = run_training(p)  # used to fail here, after training, on the unreadable pointer
    assert out["version"] in artefact.list_versions(store, "AAA-5M")
    assert not out["promoted"] and "champion.json" in out["champion_error"]
    assert store.get("models/AAA-5M/champion.json") == b"\x00garbage{"  # not overwritten blindly
    meta = json.loads(store.get(f"models/AAA-5M/{out['version']}/meta.json"))
    assert "champion.json" in meta["decision"]["champion_error"]
