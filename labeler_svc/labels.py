"""Hindsight labels: the reward of each action per horizon, from the states that followed.

Pure and vectorised (numpy, no Python loop per state). The streaming service and the batch
labeller call the same :func:`label_columns`, so their labels are identical on the same data.

Definitions (state at tick ``t``, horizon ``h``, target ``T = t + h``):

* **reward** = return on $1 spent at ``t``: ``shares = 1 / ask_t``; entry fee
  ``taker_fee(shares, ask_t)`` is paid on top of the $1; exit proceeds are ``shares * exit_px``
  minus ``taker_fee(shares, exit_px)`` for a sale at the future bid (settlement redemption is
  free). ``reward = proceeds - exit_fee - 1 - entry_fee``. Hold is 0. Buy Up uses the Up book,
  buy Down the Down book.
* **future state**: the state nearest to ``T`` (ties: the later one), valid only when within
  ``tolerance_ms`` of ``T`` and after ``t``.
* **settlement**: when the state's Polymarket window ends at or before ``T`` (``pm_end_s``), the
  exit price is the settlement value (Up: ``pm_settle_up``; Down: ``1 - pm_settle_up``), taken
  from the earliest state at or after the window's end that knows it: one of the same window
  (``pm_settle_up``) or, after rollover, one whose ``pm_prev_end_s`` is that end
  (``pm_prev_settle_up``). With ``settle_wait_ms`` only a settlement known by
  ``end + settle_wait_ms`` counts (so streaming and batch agree).
* **invalid** (``valid = 0``, ``best = -1``, ``exit_kind = EXIT_INVALID``, buy rewards NaN):
  the state at ``t`` is flagged (:data:`ENTRY_BAD_FLAGS`), has no Polymarket window, is at or
  after its window's end, or lacks an Up or Down ask in (0, 1]; or, exiting at the future bid:
  no future state within tolerance, the future state is flagged (:data:`FUTURE_BAD_FLAGS`), is
  of another window, or lacks an Up or Down bid; or, exiting at settlement: the settlement is
  not known. A label is never computed from the wrong time.

:func:`ready_mask` tells a streaming labeller which labels are *final* given the newest tick
seen so far: a final label never changes when later states arrive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from common.fees import taker_fee
from common.schema import (
    ACTIONS,
    EXIT_FUTURE_BID,
    EXIT_INVALID,
    EXIT_SETTLEMENT,
    NO_PM_MARKET,
    PM_RESOLVED,
    POLY_BOOK_EMPTY,
    RAW_INDEX,
    STALE_POLY,
    LabelColumns,
    StateColumns,
)

FUTURE_BAD_FLAGS = STALE_POLY | POLY_BOOK_EMPTY | NO_PM_MARKET
ENTRY_BAD_FLAGS = FUTURE_BAD_FLAGS | PM_RESOLVED

_UP_ASK = RAW_INDEX["up_ask_px_0"]
_UP_BID = RAW_INDEX["up_bid_px_0"]
_DN_ASK = RAW_INDEX["dn_ask_px_0"]
_DN_BID = RAW_INDEX["dn_bid_px_0"]
_END = RAW_INDEX["pm_end_s"]
_SETTLE = RAW_INDEX["pm_settle_up"]
_PREV_END = RAW_INDEX["pm_prev_end_s"]
_PREV_SETTLE = RAW_INDEX["pm_prev_settle_up"]
_NO_END = np.iinfo(np.int64).max  # sentinel: no window known
_FAR = np.iinfo(np.int64).max // 4

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def _end_ms(seconds: F64) -> I64:
    """Window end in ms (int64); :data:`_NO_END` where unknown."""
    ok = np.isfinite(seconds)
    out = np.full(seconds.shape, _NO_END, dtype=np.int64)
    out[ok] = np.rint(seconds[ok] * 1000.0).astype(np.int64)
    return out


def _check(states: StateColumns) -> None:
    t = states.tick_ms
    if t.ndim != 1 or states.raw.shape[0] != t.shape[0] or states.flags.shape[0] != t.shape[0]:
        raise ValueError("state columns have inconsistent lengths")
    if t.shape[0] > 1 and not bool(np.all(np.diff(t) > 0)):
        raise ValueError("states must be sorted by tick_ms with unique ticks")


def settlements(states: StateColumns, settle_wait_ms: int | None = None) -> tuple[F64, I64]:
    """Per state: the settlement value of its window (NaN when not known) and the tick it became known.

    Only sources at or after the window's end count (a market cannot have resolved before it
    ended), and with ``settle_wait_ms`` only those by ``end + settle_wait_ms``. The earliest
    source wins; two disagreeing sources at that same tick make the value unknown.
    """
    t = states.tick_ms
    raw = states.raw
    end = _end_ms(raw[:, _END])
    prev_end = _end_ms(raw[:, _PREV_END])
    s1 = raw[:, _SETTLE]
    s2 = raw[:, _PREV_SETTLE]
    with np.errstate(invalid="ignore"):
        m1 = (end != _NO_END) & (s1 >= 0.0) & (s1 <= 1.0) & (t >= end)
        m2 = (prev_end != _NO_END) & (s2 >= 0.0) & (s2 <= 1.0) & (t >= prev_end)
    src_e = np.concatenate([end[m1], prev_end[m2]])
    src_t = np.concatenate([t[m1], t[m2]])
    src_v = np.concatenate([s1[m1], s2[m2]])
    if settle_wait_ms is not None:
        keep = src_t <= src_e + int(settle_wait_ms)
        src_e, src_t, src_v = src_e[keep], src_t[keep], src_v[keep]
    value = np.full(t.shape, np.nan)
    known_at = np.full(t.shape, _FAR, dtype=np.int64)
    if src_e.size == 0:
        return value, known_at
    order = np.lexsort((src_v, src_t, src_e))
    src_e, src_t, src_v = src_e[order], src_t[order], src_v[order]
    windows, first = np.unique(src_e, return_index=True)
    val = src_v[first].copy()
    # ticks are unique, so sources at one tick come from one state: at most two per window and
    # tick (its own and its previous window's settlement); sorted by value, so compare neighbours
    nxt = np.minimum(first + 1, src_e.size - 1)
    clash = (src_e[nxt] == src_e[first]) & (src_t[nxt] == src_t[first]) & (src_v[nxt] != src_v[first])
    val[clash] = np.nan
    pos = np.searchsorted(windows, end)
    posc = np.minimum(pos, windows.size - 1)
    found = (pos < windows.size) & (windows[posc] == end) & (end != _NO_END)
    value[found] = val[posc[found]]
    known_at[found] = src_t[first][posc[found]]
    return value, known_at


def _entry_ok(states: StateColumns, rows: slice) -> tuple[B, I64]:
    raw = states.raw[rows]
    t = states.tick_ms[rows]
    end = _end_ms(raw[:, _END])
    up_ask, dn_ask = raw[:, _UP_ASK], raw[:, _DN_ASK]
    with np.errstate(invalid="ignore"):
        ok = (
            ((states.flags[rows] & ENTRY_BAD_FLAGS) == 0)
            & (end != _NO_END)
            & (t < end)
            & (up_ask > 0.0)
            & (up_ask <= 1.0)
            & (dn_ask > 0.0)
            & (dn_ask <= 1.0)
        )
    return ok, end


def _nearest(t: I64, target: I64, tolerance_ms: int) -> tuple[I64, B]:
    """Index of the state nearest to each target (ties: later) and whether it is within tolerance."""
    n = t.shape[0]
    j = np.searchsorted(t, target, side="left")
    jn = np.minimum(j, n - 1)
    jp = np.maximum(j - 1, 0)
    d_next = np.where(j < n, t[jn] - target, _FAR)
    d_prev = np.where(j > 0, target - t[jp], _FAR)
    take_next = d_next <= d_prev
    idx = np.where(take_next, jn, jp)
    dist = np.where(take_next, d_next, d_prev)
    return idx, dist <= tolerance_ms


def label_rows(
    states: StateColumns,
    n_rows: int,
    horizons_s: Sequence[int],
    *,
    tolerance_ms: int,
    fee_rate: float,
    fee_exponent: float,
    settle_wait_ms: int | None = None,
) -> LabelColumns:
    """Labels of the first ``n_rows`` states, looking into all of ``states`` for their futures."""
    _check(states)
    n_all = len(states)
    n = max(0, min(int(n_rows), n_all))
    hs = tuple(int(h) for h in horizons_s)
    nh = len(hs)
    rows = slice(0, n)
    t_all = states.tick_ms.astype(np.int64, copy=False)
    t = t_all[:n]
    rewards = np.zeros((n, nh, len(ACTIONS)), dtype=np.float32)
    best = np.full((n, nh), -1, dtype=np.int8)
    valid = np.zeros((n, nh), dtype=np.uint8)
    exit_kind = np.full((n, nh), EXIT_INVALID, dtype=np.uint8)
    if n == 0:
        return LabelColumns(t.copy(), hs, rewards, best, valid, exit_kind)

    raw_all = states.raw
    entry_ok, end = _entry_ok(states, rows)
    settle, _ = settlements(states, settle_wait_ms)
    settle = settle[:n]
    end_all = _end_ms(raw_all[:, _END])
    fut_bad = (states.flags & FUTURE_BAD_FLAGS) != 0

    up_ask = raw_all[:n, _UP_ASK]
    dn_ask = raw_all[:n, _DN_ASK]
    with np.errstate(divide="ignore", invalid="ignore"):
        sh_up = np.where(entry_ok, 1.0 / up_ask, np.nan)
        sh_dn = np.where(entry_ok, 1.0 / dn_ask, np.nan)
        cost_up = 1.0 + taker_fee(sh_up, up_ask, fee_rate, fee_exponent)
        cost_dn = 1.0 + taker_fee(sh_dn, dn_ask, fee_rate, fee_exponent)

        for k, h in enumerate(hs):
            target = t + h * 1000
            by_settle = (end != _NO_END) & (end <= target)
            fi, near = _nearest(t_all, target, tolerance_ms)
            up_bid = raw_all[fi, _UP_BID]
            dn_bid = raw_all[fi, _DN_BID]
            fut_ok = (
                near
                & (t_all[fi] > t)
                & ~fut_bad[fi]
                & (end_all[fi] == end)
                & (up_bid > 0.0)
                & (up_bid <= 1.0)
                & (dn_bid > 0.0)
                & (dn_bid <= 1.0)
            )
            set_ok = np.isfinite(settle)
            ok = entry_ok & np.where(by_settle, set_ok, fut_ok)
            px_up = np.where(by_settle, settle, up_bid)
            px_dn = np.where(by_settle, 1.0 - settle, dn_bid)
            fee_up = np.where(by_settle, 0.0, taker_fee(sh_up, up_bid, fee_rate, fee_exponent))
            fee_dn = np.where(by_settle, 0.0, taker_fee(sh_dn, dn_bid, fee_rate, fee_exponent))
            r_up = sh_up * px_up - fee_up - cost_up
            r_dn = sh_dn * px_dn - fee_dn - cost_dn
            rewards[:, k, 1] = np.where(ok, r_up, np.nan)
            rewards[:, k, 2] = np.where(ok, r_dn, np.nan)
            valid[:, k] = ok
            exit_kind[:, k] = np.where(ok, np.where(by_settle, EXIT_SETTLEMENT, EXIT_FUTURE_BID), EXIT_INVALID)
    # argmax on the float32 rewards that are stored (ties: the first action, hold)
    arg = np.argmax(np.nan_to_num(rewards, nan=-np.inf), axis=2).astype(np.int8)
    best = np.where(valid.astype(bool), arg, np.int8(-1)).astype(np.int8)
    return LabelColumns(t.copy(), hs, rewards, best, valid, exit_kind)


def label_columns(
    states: StateColumns,
    horizons_s: Sequence[int],
    *,
    tolerance_ms: int,
    fee_rate: float,
    fee_exponent: float,
    settle_wait_ms: int | None = None,
) -> LabelColumns:
    """Label every state of one market (sorted by ``tick_ms``, unique); row i labels state i.

    ``settle_wait_ms`` (None: no limit) bounds how late a settlement may become known; pass the
    service's ``label_settle_wait_s * 1000`` to get exactly the streaming labels.
    """
    return label_rows(
        states,
        len(states),
        horizons_s,
        tolerance_ms=tolerance_ms,
        fee_rate=fee_rate,
        fee_exponent=fee_exponent,
        settle_wait_ms=settle_wait_ms,
    )


def ready_mask(
    states: StateColumns,
    horizons_s: Sequence[int],
    *,
    newest_tick_ms: int,
    settle_wait_ms: int,
) -> B:
    """Which states' labels are final, given every state up to ``newest_tick_ms`` is in ``states``.

    Final means all horizons are either computed or definitely invalid: the state is invalid at
    entry, or for each horizon the first state at or after ``t + h`` has arrived
    (``newest_tick_ms >= t + h``) or, when the window ends before ``t + h``, its settlement is
    known or the wait for it (``end + settle_wait_ms``) has passed. A final label does not
    change when later states arrive.
    """
    _check(states)
    n = len(states)
    if n == 0:
        return np.zeros(0, dtype=bool)
    t = states.tick_ms.astype(np.int64, copy=False)
    entry_ok, end = _entry_ok(states, slice(0, n))
    settle, _ = settlements(states, settle_wait_ms)
    known = np.isfinite(settle)
    ready = np.ones(n, dtype=bool)
    for h in horizons_s:
        target = t + int(h) * 1000
        by_settle = (end != _NO_END) & (end <= target)
        settle_ready = known | (newest_tick_ms >= np.where(by_settle, end, 0) + settle_wait_ms)
        ready &= np.where(by_settle, settle_ready, newest_tick_ms >= target)
    return ready | ~entry_ok


def ready_prefix(states: StateColumns, horizons_s: Sequence[int], *, newest_tick_ms: int, settle_wait_ms: int) -> int:
    """Number of leading states whose labels are final (labels are emitted in ID order)."""
    m = ready_mask(states, horizons_s, newest_tick_ms=newest_tick_ms, settle_wait_ms=settle_wait_ms)
    bad = np.flatnonzero(~m)
    return int(bad[0]) if bad.size else int(m.size)
