"""The hindsight oracle: the exact optimum of the replay environment, a true upper bound of every policy.

The environment (``trainer_svc.env``) is deterministic given the actions, and with a fixed stake every
trade is independent of the others: a position of side ``s`` opened at step ``i`` (ask ``a`` at the
executed index, ``A = stake / a`` shares, cost ``c = stake + A * fee(a)``) and closed at step ``j > i``
(bid ``b``) realises ``A * (b - fee(b)) - c``; left open at the episode's last step it settles at
``A * settle_s`` (unknown settlement: the last mark, which a close at that bid already reaches). The
best sum over non-overlapping trades is an exact dynamic programme over steps:
``G[t]`` = best PnL while flat at the start of step ``t`` and, for each side, the best value of an open
position as a function of the exit value ``x``: ``max_i (G[i] - c_i + A_i * x)``. It is vectorised over
episodes and ``O(T^2)`` in the episode length. :func:`optimal_plan` returns the action plan; replayed
through the same environment (same fills, fees, latency, settlement) it realises the optimum, so no
policy can beat it on any window.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.fees import fee_per_share
from common.policy import BUY_DOWN, BUY_UP, HOLD
from trainer_svc.env import EpisodeBatch

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_NEG = -np.inf


def _exec(batch: EpisodeBatch, name: str, latency: int) -> F64:
    """Price (E, T) at the executed index of every step: ``min(t + latency, last)``."""
    e, t_max = batch.n_episodes, batch.horizon
    last = np.maximum(batch.length - 1, 0)
    te = np.minimum(np.arange(t_max)[None, :] + latency, last[:, None])
    arr: F64 = getattr(batch, name)
    out: F64 = arr[np.arange(e)[:, None], te]
    return out


def optimal_plan(
    batch: EpisodeBatch,
    stake: float = 1.0,
    fee_rate: float = 0.07,
    fee_exponent: float = 1.0,
    latency_ticks: int = 0,
    **_unused: object,
) -> tuple[I64, F64]:
    """``(actions (E, T), best PnL per episode (E,))``: the plan that maximises each episode's realised PnL."""
    e, t_max = batch.n_episodes, batch.horizon
    ar = np.arange(e)
    valid_t = np.arange(t_max)[None, :] < batch.length[:, None]

    def fee(p: F64) -> F64:
        return np.asarray(fee_per_share(np.nan_to_num(p), fee_rate, fee_exponent), dtype=np.float64)

    sides = []
    for ask_name, bid_name, act, flip in (("up_ask", "up_bid", BUY_UP, False), ("dn_ask", "dn_bid", BUY_DOWN, True)):
        ask, bid = _exec(batch, ask_name, latency_ticks), _exec(batch, bid_name, latency_ticks)
        can_open = valid_t & np.isfinite(ask) & (ask > 0) & (ask <= 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = np.where(can_open, stake / np.where(can_open, ask, 1.0), 0.0)
        cost = np.where(can_open, stake + shares * fee(ask), np.inf)
        exit_x = np.where(valid_t & np.isfinite(bid), bid - fee(bid), np.nan)
        settle = 1.0 - batch.settle if flip else batch.settle
        sides.append((act, shares, cost, exit_x, settle))

    g = np.zeros((e, t_max + 1))  # best PnL flat at the start of step t
    # back-pointers: how the flat state at t+1 was reached: -1 hold, else (side k, entry i) encoded as k * T + i
    how = np.full((e, t_max + 1), -1, np.int64)
    base = [np.full((e, t_max), _NEG) for _ in sides]  # G[i] - c_i for positions opened at i (else -inf)
    for t in range(t_max):
        live = t < batch.length
        for k, (_, _, cost, _, _) in enumerate(sides):
            base[k][:, t] = np.where(live & np.isfinite(cost[:, t]), g[:, t] - cost[:, t], _NEG)
        best, arg = g[:, t].copy(), np.full(e, -1, np.int64)
        for k, (_, shares, _, exit_x, _) in enumerate(sides):
            x = exit_x[:, t]
            if t > 0 and np.isfinite(x).any():
                vals = base[k][:, :t] + shares[:, :t] * np.nan_to_num(x)[:, None]
                i = vals.argmax(axis=1)
                v = np.where(np.isfinite(x), vals[ar, i], _NEG)
                better = live & (v > best)
                best = np.where(better, v, best)
                arg = np.where(better, k * t_max + i, arg)
        g[:, t + 1] = np.where(live, best, g[:, t])
        how[:, t + 1] = np.where(live, arg, -1)

    # the end: flat, or a position opened at i <= last settling at the window's resolution
    final, final_arg = g[ar, batch.length].copy(), np.full(e, -1, np.int64)
    for k, (_, shares, _, _, settle) in enumerate(sides):
        vals = base[k] + shares * np.nan_to_num(settle)[:, None]
        vals = np.where(np.isfinite(settle)[:, None] & valid_t, vals, _NEG)
        i = vals.argmax(axis=1) if t_max else np.zeros(e, np.int64)
        v = vals[ar, i] if t_max else np.full(e, _NEG)
        better = v > final
        final = np.where(better, v, final)
        final_arg = np.where(better, k * t_max + i, final_arg)

    plan = np.full((e, t_max), HOLD, np.int64)
    for ep in range(e):
        t = int(batch.length[ep])
        code = int(final_arg[ep])
        if code >= 0:  # settle: open at i, hold to the end
            k, i = divmod(code, t_max)
            plan[ep, i] = sides[k][0]
            t = i
        while t > 0:
            code = int(how[ep, t])
            if code < 0:
                t -= 1
                continue
            k, i = divmod(code, t_max)
            j = t - 1  # closed at step j
            plan[ep, j] = BUY_DOWN if sides[k][0] == BUY_UP else BUY_UP
            plan[ep, i] = sides[k][0]
            t = i
    return plan, final
