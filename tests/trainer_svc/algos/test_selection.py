"""Model selection on the validation windows: the HOLD bias is baked into a copy, the grid's best wins, ties
go to the first (BC grid) or to the smallest |bias| (PPO grid)."""

import numpy as np
import pytest

from common.policy import BUY_UP, HOLD, init_weights
from trainer_svc.algos.config import TrainConfig
from trainer_svc.algos.selection import best_bias, tune_hold_bias, val_pnl, with_hold_bias
from trainer_svc.dataset import make_dataset
from trainer_svc.env import build_batch
from trainer_svc.hindsight import label_columns
from trainer_svc.synthetic import generate


@pytest.fixture(scope="module")
def val_batch():
    s = generate(n_states=12_000, window_s=300, seed=3)
    lab, _ = label_columns(s, (30,), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(s, lab, purge_s=30)
    return build_batch(ds.states, ds.windows, ds.splits["val"].windows)


def always(action: int) -> dict[str, np.ndarray]:
    w = init_weights(0)
    w["actor.out.weight"] = np.zeros_like(w["actor.out.weight"])
    w["actor.out.bias"] = np.where(np.arange(3) == action, 10.0, 0.0).astype(np.float32)
    return w


def test_with_hold_bias_adds_to_hold_only_on_a_copy():
    w = always(BUY_UP)
    b = with_hold_bias(w, 2.5)
    assert b["actor.out.bias"][HOLD] == 2.5 and w["actor.out.bias"][HOLD] == 0.0
    np.testing.assert_array_equal(b["actor.out.bias"][1:], w["actor.out.bias"][1:])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_grid_picks_the_better_of_trading_and_holding(val_batch, sign):
    """A bias of 20 turns an always-buy-Up policy into always-HOLD (PnL 0); the grid keeps whichever of the two
    earns more on validation (``sign`` flips which one, through the fee rate)."""
    cfg = TrainConfig(hold_bias_grid=(0.0, 20.0), fee_rate=0.0 if sign > 0 else 3.0)
    trading = val_pnl(val_batch, always(BUY_UP), cfg)
    assert np.sign(trading) == sign
    bias, pnl, w = tune_hold_bias(val_batch, always(BUY_UP), cfg)
    want = (0.0, trading) if trading > 0 else (20.0, 0.0)
    assert (bias, pnl) == pytest.approx(want) and w["actor.out.bias"][HOLD] == bias
    assert best_bias(val_batch, always(BUY_UP), cfg, (-1.0, 0.0, 20.0)) == pytest.approx(want[::-1])


def test_ties_first_of_grid_for_bc_smallest_abs_for_ppo(val_batch):
    cfg = TrainConfig(hold_bias_grid=(2.0, 0.0, 4.0))
    assert tune_hold_bias(val_batch, always(HOLD), cfg)[:2] == (2.0, 0.0)
    assert best_bias(val_batch, always(HOLD), cfg, (-2.0, 4.0, 1.0, -1.0)) == (0.0, 1.0)
