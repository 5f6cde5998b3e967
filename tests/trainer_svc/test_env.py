import numpy as np
import pytest

from common.features import N_MARKET_FEATURES, N_OBS
from common.fees import fee_per_share
from common.policy import BUY_DOWN, BUY_UP, HOLD
from trainer_svc.env import ReplayEnv, build_batch
from trainer_svc.windows import segment

from .helpers import book, tiny_states

T0 = 1_000_000_000_000
S = T0 / 1000


def window(prices, start_s, settle_next=None, **extra):
    """Rows of one window (prices = [(bid, ask)]); optional first row of the next window reporting settlement."""
    end_s = start_s + 60
    rows = [book(b, a, start_s, end_s, **extra) for b, a in prices]
    if settle_next is not None:
        rows.append(book(0.5, 0.51, end_s, end_s + 60, pm_prev_end_s=end_s, pm_prev_settle_up=settle_next))
    return rows


def run(env, actions):
    rewards, dones = [], []
    env.reset()
    for a in actions:
        r, d = env.step(np.atleast_1d(a))
        rewards.append(r.copy())
        dones.append(d.copy())
    return np.array(rewards), np.array(dones)


def test_open_close_at_ask_bid_with_fees_and_alignment():
    st = tiny_states(window([(0.40, 0.42), (0.50, 0.52), (0.55, 0.57), (0.60, 0.62)], S, settle_next=1.0))
    w = segment(st)
    assert len(w) == 2 and w.settle[0] == 1.0 and np.isnan(w.settle[1])
    env = ReplayEnv(build_batch(st, w, [0]))
    r, d = run(env, [BUY_UP, HOLD, BUY_DOWN, HOLD])
    shares = 1 / 0.42
    cost = 1 + shares * fee_per_share(0.42)
    proceeds = shares * (0.55 - fee_per_share(0.55))
    # the reward of a_t lands at step t: nothing at the open, the realised PnL at the close
    assert r[0, 0] == 0 and r[1, 0] == 0
    assert r[2, 0] == pytest.approx(proceeds - cost, abs=1e-12)
    assert r[3, 0] == 0 and d[:, 0].tolist() == [False, False, False, True]
    assert env.trades[0] == 1 and env.wins[0] == 1 and env.deployed[0] == pytest.approx(cost)


def test_settlement_at_resolution_and_unknown_resolution_sells_at_last_bid():
    rows = window([(0.40, 0.42), (0.45, 0.47), (0.30, 0.32)], S)
    # the second window reports the first one's resolution; its own never arrives
    rows += window([(0.40, 0.42), (0.45, 0.47), (0.20, 0.22)], S + 60, pm_prev_end_s=S + 60, pm_prev_settle_up=1.0)
    st = tiny_states(rows)
    w = segment(st)
    assert w.settle[0] == 1.0 and np.isnan(w.settle[1])
    env = ReplayEnv(build_batch(st, w))
    r, d = run(env, [[BUY_UP, BUY_UP], [HOLD, HOLD], [HOLD, HOLD]])
    shares = 1 / 0.42
    cost = 1 + shares * fee_per_share(0.42)
    assert r[2, 0] == pytest.approx(shares * 1.0 - cost)  # settled at $1, no exit fee
    assert r[2, 1] == pytest.approx(shares * (0.20 - fee_per_share(0.20)) - cost)  # sold at the last bid
    assert d[2].all()


def test_down_side_no_flip_and_noops():
    st = tiny_states(window([(0.60, 0.62), (0.50, 0.52), (0.50, 0.52), (0.40, 0.42)], S, settle_next=0.0))
    env = ReplayEnv(build_batch(st, segment(st), [0]))
    r, _ = run(env, [BUY_DOWN, BUY_DOWN, BUY_UP, BUY_UP])
    # buy Down at 1 - 0.60 = 0.40; BUY_DOWN again = no-op; BUY_UP closes at the Down bid 1 - 0.52 = 0.48;
    # the last BUY_UP opens Up at 0.42 which then settles at 0
    sh = 1 / 0.40
    first = sh * (0.48 - fee_per_share(0.48)) - (1 + sh * fee_per_share(0.40))
    assert r[1, 0] == 0 and r[2, 0] == pytest.approx(first)
    assert r[3, 0] == pytest.approx(0.0 - (1 + fee_per_share(0.42) / 0.42))
    assert env.trades[0] == 2


def test_missing_ask_refuses_open_and_observation_has_agent_features():
    rows = window([(0.40, 0.42), (0.45, 0.47), (0.50, 0.52)], S, settle_next=1.0)
    rows[0]["up_ask_px_0"] = np.nan
    st = tiny_states(rows)
    env = ReplayEnv(build_batch(st, segment(st), [0]))
    env.reset()
    env.step([BUY_UP])
    assert env.side[0] == 0  # refused: no ask
    env.step([BUY_UP])
    o = env.observe()
    assert o.shape == (1, N_OBS)
    assert o[0, N_MARKET_FEATURES] == 1.0 and o[0, N_MARKET_FEATURES + 1] == 1.0  # has_position, side Up
    expected = ((1 / 0.47) * (0.45 - fee_per_share(0.45)) - (1 + fee_per_share(0.47) / 0.47)) / (
        1 + fee_per_share(0.47) / 0.47
    )
    assert o[0, N_MARKET_FEATURES + 2] == pytest.approx(expected, abs=1e-6)


def test_mark_rewards_sum_to_realised_pnl_on_synthetic_data():
    from trainer_svc.synthetic import generate

    st = generate(n_states=7200, seed=3)
    batch = build_batch(st)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 3, (batch.horizon, batch.n_episodes))
    tot = {}
    for mode in ("realised", "mark"):
        env = ReplayEnv(batch, reward=mode)
        r, _ = run(env, list(acts))
        tot[mode] = r.sum(axis=0)
        pnl = env.pnl.copy()
    np.testing.assert_allclose(tot["mark"], tot["realised"], atol=1e-9)
    np.testing.assert_allclose(tot["realised"], pnl, atol=1e-9)


def test_latency_executes_at_later_quotes():
    st = tiny_states(window([(0.40, 0.42), (0.50, 0.52), (0.55, 0.57)], S, settle_next=1.0))
    env = ReplayEnv(build_batch(st, segment(st), [0]), latency_ticks=1)
    env.reset()
    env.step([BUY_UP])
    assert env.shares[0] == pytest.approx(1 / 0.52)


@pytest.mark.parametrize("settle_up", [0.0, 1.0])
def test_down_position_settles_at_one_minus_settle_up(settle_up):
    st = tiny_states(window([(0.90, 0.92), (0.95, 0.97)], S, settle_next=settle_up))
    env = ReplayEnv(build_batch(st, segment(st), [0]))
    r, _ = run(env, [BUY_DOWN, HOLD])
    ask = round(1 - 0.90, 6)
    shares = 1 / ask
    assert r[1, 0] == pytest.approx(shares * (1 - settle_up) - (1 + shares * fee_per_share(ask)))
