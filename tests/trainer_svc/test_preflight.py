"""Any tick and window length end to end (1-minute ticks, hourly and 4-hour windows), and a job that cannot
train stops before training with a message naming the setting to change."""

import numpy as np
import pytest

from trainer_svc.algos import TrainConfig, train
from trainer_svc.dataset import horizon_index, make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, promote_decision, run_policy, weights_policy
from trainer_svc.hindsight import label_columns
from trainer_svc.preflight import NotTrainable, check_trainable
from trainer_svc.synthetic import generate

MIN = 60_000


@pytest.mark.parametrize(("window_s", "n_states"), [(3600, 12 * 24 * 60 // 2), (4 * 3600, 30 * 24 * 60 // 2)])
def test_minute_ticks_hourly_and_4h_windows_train_and_evaluate(window_s, n_states):
    s = generate(n_states=n_states, tick_ms=MIN, window_s=window_s, lag_s=120.0, seed=3)
    assert int(np.median(np.diff(s.tick_ms))) == MIN
    lab, _ = label_columns(s, (60, 300), tolerance_ms=2_000)
    ds = make_dataset(s, lab)
    cfg = TrainConfig(algo="awbc", backend="torch", epochs=2, horizon_s=60)
    figures = check_trainable(ds, cfg.horizon_s, tolerance_ms=2_000)
    assert figures["tick_s"] == 60.0 and figures["windows"]["holdout"] >= 2
    res = train(ds, cfg)
    hold = build_batch(s, ds.windows, ds.splits["holdout"].windows)
    assert hold.horizon == window_s // 60
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    base = baselines(hold, lab, horizon_index(lab, 60))
    assert np.all(cand.window_pnl <= base["oracle"].window_pnl + 1e-9)
    promote_decision(cand, None, base)  # runs on these windows
    assert cand.metrics["windows"] == len(ds.splits["holdout"].windows)


def test_horizon_shorter_than_the_tick_stops_before_training():
    s = generate(n_states=3 * 24 * 60, tick_ms=MIN, window_s=3600, seed=1)
    lab, _ = label_columns(s, (30, 60), tolerance_ms=2_000)
    ds = make_dataset(s, lab)
    with pytest.raises(NotTrainable) as ei:
        check_trainable(ds, 30, tolerance_ms=2_000)
    msg = str(ei.value)
    assert "30 s" in msg and "tick" in msg and "60 s" in msg and "horizon_s" in msg and "FUSION_LABEL_HORIZONS_S" in msg
    with pytest.raises(NotTrainable) as ei:  # not a multiple of the tick either
        check_trainable(ds, 90, tolerance_ms=2_000)
    assert "FUSION_LABEL_TOLERANCE_MS" in str(ei.value) and "horizon_s" in str(ei.value)
    check_trainable(ds, 60, tolerance_ms=2_000)  # fits


def test_too_few_windows_stops_before_training():
    s = generate(n_states=5 * 240, tick_ms=MIN, window_s=4 * 3600, seed=1)  # 5 four-hour windows
    lab, _ = label_columns(s, (60,), tolerance_ms=2_000)
    with pytest.raises(NotTrainable) as ei:
        check_trainable(make_dataset(s, lab), 60, tolerance_ms=2_000)
    msg = str(ei.value)
    assert "windows" in msg and "hold-out" in msg and ("--from" in msg or "more data" in msg)


def test_pipeline_refuses_before_training(tmp_path):
    """The job itself stops with the message before training (it used to fail inside training with
    `ValueError: no valid training samples`, or in the split with no setting named)."""
    from common.store import LocalStore
    from trainer_svc.pipeline import JobParams, run_training

    store = LocalStore(tmp_path / "store")
    p = JobParams(market="AAA-5M", synthetic=2_400, store_url=store.url, overrides={"epochs": 1})  # 20 min of data
    with pytest.raises(NotTrainable) as ei:
        run_training(p)
    assert "windows" in str(ei.value)
    assert list(store.list("models/")) == []  # nothing trained, nothing saved


def test_fusion_train_inline_says_what_to_change(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "fusion.cli", "train", "--market", "AAA-5M", "--synthetic", "2400", "--inline"]
    cmd += ["--backend", "torch", "--store-url", f"file://{tmp_path}/store", "--redis-url", "redis://127.0.0.1:1/0"]
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "not trainable" in p.stderr and "windows" in p.stderr and "Traceback" not in p.stderr
