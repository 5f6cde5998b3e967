import numpy as np

from trainer_svc.algos import TrainConfig, train
from trainer_svc.dataset import make_dataset
from trainer_svc.hindsight import label_columns
from trainer_svc.ppo import gae
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
