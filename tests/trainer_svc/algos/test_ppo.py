"""PPO: GAE bookkeeping, a smoke run, and the issue's claim (beats every baseline on hold-out with lead-lag,
never promoted without it; the AWBC-warm-started run is the default test, from scratch is slow)."""

import numpy as np
import pytest

from trainer_svc.algos import TrainConfig, train
from trainer_svc.algos.ppo import gae
from trainer_svc.dataset import horizon_index, make_dataset
from trainer_svc.env import build_batch
from trainer_svc.evaluate import baselines, promote_decision, run_policy, weights_policy
from trainer_svc.hindsight import label_columns
from trainer_svc.synthetic import generate


def test_gae_per_episode_no_leak_across_episodes_or_padding():
    rew = np.array([[0.0, 0.0, 1.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    val = np.array([[0.1, 0.2, 0.3, 9.0], [0.5, 0.4, 9.0, 9.0]])
    done = np.array([[False, False, True, False], [False, True, False, False]])
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    g, lam = 0.9, 0.8
    adv, ret = gae(rew, val, done, mask, g, lam)
    # episode 0, by hand (terminal at t=2: no bootstrap from the padding's 9.0)
    d2 = 1.0 - 0.3
    d1 = 0.0 + g * 0.3 - 0.2
    d0 = 0.0 + g * 0.2 - 0.1
    a2, a1 = d2, d1 + g * lam * d2
    assert np.allclose(adv[0, :3], [d0 + g * lam * a1, a1, a2]) and adv[0, 3] == 0
    # episode 1 never sees episode 0's rewards or values
    e1 = [5.0 + g * 0.4 - 0.5, 0.0 - 0.4]
    assert np.allclose(adv[1, :2], [e1[0] + g * lam * e1[1], e1[1]])
    assert np.allclose(ret[mask], (adv + val)[mask])


def test_ppo_smoke_scratch_runs_and_records_history():
    s = generate(n_states=18_000, window_s=300, seed=7)
    lab, _ = label_columns(s, (30,), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(s, lab, purge_s=30)
    cfg = TrainConfig(algo="ppo", backend="torch", ppo_iters=2, ppo_episodes=8, ppo_init="scratch", eval_every=1)
    res = train(ds, cfg)
    assert len(res.history) == 2 and all(np.isfinite(h["value_loss"]) for h in res.history)
    assert {"actor.fc1.weight", "critic.out.weight"} <= set(res.weights)


def _ppo_decide(lag, seed=2, **cfg):
    s = generate(n_states=72_000, lag_s=lag, seed=seed, window_s=300)
    lab, _ = label_columns(s, (30, 60), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(s, lab)
    res = train(ds, TrainConfig(algo="ppo", backend="torch", **cfg))
    hold = build_batch(s, ds.windows, ds.splits["holdout"].windows)
    cand = run_policy(hold, weights_policy(res.weights), "candidate")
    base = baselines(hold, lab, horizon_index(lab, 30))
    return cand, promote_decision(cand, None, base), res


def test_ppo_warm_start_is_promoted_with_lead_lag():
    cand, d, res = _ppo_decide(30.0, epochs=4, ppo_iters=8)
    assert d.promote, d.reason
    for name in ("hold", "random", "momentum"):
        assert d.comparisons[name]["ci_lo"] > 0, name
    assert res.extra["val_pnl"] >= res.extra["init_val_pnl"]  # selection never returns worse than the start
    assert cand.metrics["trades"] > 0


@pytest.mark.slow
def test_ppo_iterations_improve_on_the_awbc_warm_start():
    """With market-v2 the AWBC start is already strong; PPO's first iterations dip, and within the
    default 30 its own iterations win the validation selection (measured: 149 -> 168 on this data)."""
    cand, d, res = _ppo_decide(30.0, epochs=4)
    assert d.promote, d.reason
    assert res.best_epoch >= 0 and res.extra["val_pnl"] > res.extra["init_val_pnl"]


@pytest.mark.slow  # 13 s; the default suite keeps the positive case, the slow suite has the scratch negative too
def test_ppo_nothing_promoted_without_lead_lag():
    _, d, _ = _ppo_decide(0.0, epochs=4, ppo_iters=8)
    assert not d.promote


@pytest.mark.slow
def test_ppo_from_scratch_beats_baselines_with_lead_lag_only():
    cand, d, res = _ppo_decide(30.0, ppo_init="scratch", ppo_iters=20, ppo_episodes=256, ppo_epochs=4, minibatch=4096)
    assert d.promote, d.reason
    assert res.best_epoch >= 0 and res.extra["val_pnl"] > res.extra["init_val_pnl"]
    _, d0, _ = _ppo_decide(0.0, ppo_init="scratch", ppo_iters=20, ppo_episodes=256, ppo_epochs=4, minibatch=4096)
    assert not d0.promote, d0.reason
