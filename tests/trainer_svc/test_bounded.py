"""The bounded data path (awbc): the same splits, samples, validation episodes and hold-out figures as the
in-memory path on small data, the hold-out in chunks, the scratch removed, and an estimate that refuses."""

from __future__ import annotations

import numpy as np
import pytest

from archiver_svc.budget import TooLarge
from common.settings import get_settings
from common.store import LocalStore
from trainer_svc import bounded
from trainer_svc.algos import TrainConfig
from trainer_svc.algos.cloning import bc_targets
from trainer_svc.dataset import make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, momentum_policy, run_policy
from trainer_svc.pipeline import JobParams, _load_one, check_budget, estimate_job, load_data, run_training

HORIZONS = (30, 60, 300)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The in-memory dataset and the bounded data of the same two synthetic markets (5-minute windows)."""
    p = JobParams(market="AAA-5M,BBB-5M", synthetic=24_000, synthetic_lag_s=30.0)
    states, labels, info = load_data(p, HORIZONS)
    pooled = info.pop("pooled")
    ds = make_dataset(states, labels, windows=pooled["windows"], parts=pooled["parts"])
    b = bounded.build(["AAA-5M", "BBB-5M"], lambda m, k: _load_one(p, m, (30,), k), 30, 300.0,
                      str(tmp_path_factory.mktemp("scratch")))  # fmt: skip
    yield ds, b
    b.close()


def test_same_windows_splits_and_description(pair) -> None:
    ds, b = pair
    assert np.array_equal(ds.windows.begin, b.windows.begin) and np.array_equal(ds.windows.end, b.windows.end)
    assert np.array_equal(ds.windows.settle, b.windows.settle, equal_nan=True)
    assert ds.describe() == b.describe()
    assert b.describe()["train"]["windows"] > 10
    rows = ds.splits["train"].rows(ds.windows)
    assert int(b.n_valid[b.splits["train"].windows].sum()) == int(ds.labels.valid[rows, 0].sum())


@pytest.mark.parametrize("cap", [10**9, 7_000])  # every valid row; a seeded subsample of them
def test_same_training_samples_in_the_same_order(pair, cap) -> None:
    ds, b = pair
    cfg = TrainConfig(max_train_samples=cap)
    rows = ds.splits["train"].rows(ds.windows)
    q, w, keep = bc_targets(ds, rows, cfg)
    rows, q, w = rows[keep], q[keep], w[keep]
    if rows.size > cap:  # what train_bc draws
        pick = np.sort(np.random.default_rng(cfg.seed).choice(rows.size, cap, replace=False))
        rows, q, w = rows[pick], q[pick], w[pick]
    market, bq, bw, n_valid = bounded.train_samples(b, cfg)
    assert n_valid == int(keep.sum()) and market.shape[0] == min(cap, n_valid)
    assert np.array_equal(market, ds.states.features[rows, : market.shape[1]])
    assert np.array_equal(bq, q) and np.array_equal(bw, w)


def test_same_validation_episodes_and_a_capped_subset(pair) -> None:
    ds, b = pair
    want = build_batch(ds.states, ds.windows, ds.splits["val"].windows)
    got = bounded.episode_batch(b, bounded.val_windows(b, 10**9))
    for f in ("market", "up_ask", "up_bid", "dn_ask", "dn_bid", "tick_ms", "rows", "length", "settle", "start_s"):
        assert np.array_equal(getattr(got, f), getattr(want, f), equal_nan=True), f
    v = b.splits["val"].windows
    few = bounded.val_windows(b, 3 * 1800)  # 15-minute windows: 1800 states each
    assert 1 <= few.size <= 3 and set(few.tolist()) <= set(v.tolist())
    assert few[0] == v[0] and few[-1] == v[-1] or few.size == 1  # spread over the split, not its head


def test_holdout_in_chunks_equals_one_batch(pair) -> None:
    ds, b = pair
    sel = ds.splits["holdout"].windows[:4]  # windows of both markets
    assert len(set(b.market_of[sel].tolist())) == 2
    whole = build_batch(ds.states, ds.windows, sel)
    want = {"momentum": run_policy(whole, momentum_policy, "momentum"), **baselines(whole, None, 0, seed=3)}

    def runs(batch, c):
        return {"momentum": run_policy(batch, momentum_policy, "momentum"), **baselines(batch, None, 0, seed=3 + c)}

    one = bounded.evaluate_chunked(b, sel, 10**9, runs)
    assert {k: v.metrics for k, v in one.items()} == {k: v.metrics for k, v in want.items()}
    assert len(bounded.chunks(b, sel, 2 * 1800)) == 2  # 15-minute windows: 1800 states each
    chunked = bounded.evaluate_chunked(b, sel, 2 * 1800, runs)
    for name in ("momentum", "hold", "oracle"):  # decided per episode: chunks change nothing
        assert np.array_equal(chunked[name].window_pnl, want[name].window_pnl), name
        assert chunked[name].metrics == want[name].metrics, name
    assert chunked["random"].window_pnl.size == sel.size


def test_spill_reads_row_ranges(tmp_path) -> None:
    sp = bounded.Spill(tmp_path / "s")
    a = np.arange(60, dtype=np.float32).reshape(20, 3)
    sp.write("a", a)
    sp.write("k", a[:, 0] > 30)
    assert np.array_equal(sp.read("a", 5, 9), a[5:9]) and np.array_equal(sp.read("k", 10, 12), a[10:12, 0] > 30)
    assert sp.read("a", 7, 7).shape == (0, 3)


@pytest.mark.slow  # ~30 s: one training run (tests/trainer_svc/test_pipeline.py runs one on this path by default)
def test_awbc_job_states_its_sample_and_leaves_no_scratch(tmp_path, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("FUSION_TRAIN_SCRATCH_DIR", str(scratch))
    get_settings.cache_clear()
    try:
        store = LocalStore(tmp_path / "store")
        p = JobParams(market="AAA-5M,BBB-5M", synthetic=28_800, store_url=store.url, promote=False,
                      overrides={"epochs": 1, "max_train_samples": 4_000, "eval_chunk_states": 2_000})  # fmt: skip
        out = run_training(p)
    finally:
        get_settings.cache_clear()
    used = out["data"]["bounded"]
    assert used["train_samples"] == 4_000 < used["train_valid_rows"] and used["spill_bytes"] > 100 * 2 * 28_800
    assert out["holdout"]["candidate"]["windows"] == out["splits"]["holdout"]["windows"]
    assert out["holdout"]["oracle"]["pnl"] >= out["holdout"]["candidate"]["pnl"]
    assert list(scratch.iterdir()) == []


def test_estimate_is_bounded_and_still_refuses(monkeypatch) -> None:
    cfg = TrainConfig()
    ten = [f"M{i}-15M" for i in range(10)]
    big = JobParams(market=",".join(ten), synthetic=4_838_400)  # 10 markets x 4 weeks at 0.5 s
    est = estimate_job(big, ten, HORIZONS, cfg)
    assert est.rows == 48_384_000 and est.gb < 4.0 < estimate_job(big, ten, HORIZONS).gb  # vs every state held
    one = JobParams(market="M0-15M", synthetic=40_000_000)  # one market is loaded whole: that bounds pass 1
    assert estimate_job(one, ["M0-15M"], HORIZONS, cfg).gb > 10
    monkeypatch.setenv("FUSION_TRAIN_MAX_MEMORY_GB", "1")
    get_settings.cache_clear()
    try:
        with pytest.raises(TooLarge, match="FUSION_TRAIN_MAX_MEMORY_GB"):
            check_budget(big, ten, HORIZONS, cfg)
    finally:
        get_settings.cache_clear()


def test_a_job_the_scratch_cannot_hold_is_refused_up_front(tmp_path) -> None:
    with pytest.raises(bounded.ScratchTooSmall, match="FUSION_TRAIN_SCRATCH_DIR"):
        bounded.check_scratch(str(tmp_path), 10**15)  # 10^15 states: more than any disk here
    assert bounded.check_scratch(str(tmp_path), 1_000) == 1_000 * (bounded.SPILL_BYTES_PER_STATE + 16)
    assert bounded.SPILL_BYTES_PER_STATE == 117  # what the 1 M point of benchmarks/scale.py spilled per state
