"""AWBC on synthetic data: beats every baseline on hold-out with a bootstrap CI above zero when Binance
leads Polymarket, and is never promoted when it does not (small sizes; bigger ones are slow-marked)."""

import pytest

from trainer_svc.algos import TrainConfig, train
from trainer_svc.dataset import horizon_index, make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, promote_decision, run_policy, weights_policy
from trainer_svc.hindsight import label_columns
from trainer_svc.synthetic import generate


def train_and_decide(n, lag, seed, window_s, algo="awbc", **cfg):
    s = generate(n_states=n, lag_s=lag, seed=seed, window_s=window_s)
    lab, _ = label_columns(s, (30, 60), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(s, lab)
    res = train(ds, TrainConfig(algo=algo, backend="torch", **cfg))
    hold = build_batch(s, ds.windows, ds.splits["holdout"].windows)
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    base = baselines(hold, lab, horizon_index(lab, 30))
    return cand, base, promote_decision(cand, None, base), res


def test_awbc_beats_every_baseline_with_lead_lag():
    cand, base, d, res = train_and_decide(72_000, 30.0, 2, 300, epochs=4)
    assert d.promote, d.reason
    for name in ("hold", "random", "momentum"):
        assert d.comparisons[name]["ci_lo"] > 0, name
    assert cand.metrics["pnl"] > 0 and cand.metrics["trades"] > 0
    assert base["oracle"].metrics["pnl"] > 0
    assert len(res.history) == 4 and all("val_pnl" in h for h in res.history)


def test_nothing_promoted_without_lead_lag():
    cand, base, d, _ = train_and_decide(72_000, 0.0, 2, 300, epochs=4)
    assert not d.promote
    assert base["momentum"].metrics["pnl"] < 0 and base["random"].metrics["pnl"] < 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_awbc_15min_windows_larger(seed):
    _, _, d, _ = train_and_decide(360_000, 30.0, seed, 900, epochs=6)
    assert d.promote, d.reason
    _, _, d0, _ = train_and_decide(360_000, 0.0, seed, 900, epochs=6)
    assert not d0.promote, d0.reason


def test_supervised_runs_and_selects_on_validation():
    cand, _, d, res = train_and_decide(36_000, 30.0, 2, 300, algo="supervised", epochs=2)
    assert res.best_epoch in (0, 1) and cand.metrics["windows"] > 0
