"""The hindsight oracle is the exact optimum of the replay environment: no policy beats it on any window
(same fills, fees, latency and settlement), and a market with no cross-venue relation promotes nothing."""

import numpy as np
import pytest

from common.features import market_features
from common.schema import RAW_FIELDS, RAW_INDEX, StateColumns
from trainer_svc.algos import TrainConfig, train
from trainer_svc.dataset import horizon_index, make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, momentum_policy, promote_decision, random_policy, run_policy, weights_policy
from trainer_svc.hindsight import label_columns
from trainer_svc.synthetic import generate
from trainer_svc.windows import segment

BN = [i for i, f in enumerate(RAW_FIELDS) if f.startswith("bn_") or f == "age_binance_ms"]


def sticky_random(seed: int, p_act: float):
    """Random policy that trades rarely (holds positions for a while): explores long holding periods."""
    rng = np.random.default_rng(seed)

    def act(env, obs):
        a = rng.integers(1, 3, obs.shape[0])
        return np.where(rng.random(obs.shape[0]) < p_act, a, 0)

    return act


@pytest.mark.parametrize("env_kwargs", [{}, {"latency_ticks": 2}, {"fee_rate": 0.02, "stake": 3.0}])
def test_no_policy_beats_the_oracle_on_any_window(env_kwargs):
    s = generate(n_states=7_200, lag_s=30.0, seed=5, window_s=300, tick_ms=1000)
    lab, _ = label_columns(s, (30, 60))
    batch = build_batch(s, segment(s))
    base = baselines(batch, lab, horizon_index(lab, 30), env_kwargs)
    oracle = base["oracle"].window_pnl
    others = [base[k] for k in ("hold", "random", "momentum")]
    others += [run_policy(batch, random_policy(k), "r", env_kwargs) for k in range(6)]
    others += [run_policy(batch, sticky_random(k, p), "s", env_kwargs) for k in range(6) for p in (0.01, 0.05, 0.2)]
    others.append(run_policy(batch, momentum_policy, "m", env_kwargs))
    for bt in others:
        assert np.all(bt.window_pnl <= oracle + 1e-9), (bt.name, float(bt.window_pnl.sum()), float(oracle.sum()))
    assert oracle.sum() > 0 and np.all(oracle >= -1e-12)


def test_oracle_beats_a_trained_candidate():
    s = generate(n_states=36_000, lag_s=30.0, seed=2, window_s=300)
    lab, _ = label_columns(s, (30, 60))
    ds = make_dataset(s, lab)
    res = train(ds, TrainConfig(algo="awbc", backend="torch", epochs=2))
    hold = build_batch(s, ds.windows, ds.splits["holdout"].windows)
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    oracle = baselines(hold, lab, horizon_index(lab, 30))["oracle"]
    assert np.all(cand.window_pnl <= oracle.window_pnl + 1e-9)
    assert oracle.metrics["pnl"] > cand.metrics["pnl"]


def shifted_binance(s: StateColumns, shift_rows: int) -> StateColumns:
    """Polymarket books of ``s`` paired with its Binance side from ``shift_rows`` ticks earlier (another time)."""
    raw = s.raw.copy()
    raw[:, BN] = np.roll(s.raw[:, BN], shift_rows, axis=0)
    raw[:, RAW_INDEX["bn_open_px"]] = np.nan
    return StateColumns(s.tick_ms, raw, market_features(raw, s.tick_ms), s.flags, s.slugs)


def test_nothing_promoted_when_binance_comes_from_another_time():
    s = shifted_binance(generate(n_states=72_000, lag_s=30.0, seed=2, window_s=300), shift_rows=20_000)
    lab, _ = label_columns(s, (30, 60))
    ds = make_dataset(s, lab)
    res = train(ds, TrainConfig(algo="awbc", backend="torch", epochs=4))
    hold = build_batch(s, ds.windows, ds.splits["holdout"].windows)
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    base = baselines(hold, lab, horizon_index(lab, 30))
    d = promote_decision(cand, None, base)
    assert not d.promote, d.reason
    assert np.all(cand.window_pnl <= base["oracle"].window_pnl + 1e-9)
