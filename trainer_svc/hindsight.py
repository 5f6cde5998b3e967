"""Hindsight labels for the trainer: the labeler's batch function when it is installed, else a
vectorised fallback with the same contract (``common.schema.LabelColumns``).

Reward of an action at t for horizon h = return on $1 spent at t (the labeler's convention): buy
``1 / ask`` shares at the ask and pay the taker fee on top, exit at the token's bid of the state nearest t + h
(within ``tolerance_ms``, same window) less the fee, or at the settlement value (free) when the
window ends before t + h. Hold is 0. Invalid (future missing, bid/ask missing, stale, settlement
unknown) rows have ``valid = 0`` and ``best = -1``; they are never silently wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.fees import fee_per_share
from common.schema import (
    EXIT_FUTURE_BID,
    EXIT_INVALID,
    EXIT_SETTLEMENT,
    RAW_INDEX,
    STALE_BINANCE,
    STALE_POLY,
    LabelColumns,
    StateColumns,
)
from trainer_svc.windows import segment, window_of_rows


def fallback_labels(
    states: StateColumns,
    horizons_s: Sequence[int],
    *,
    tolerance_ms: int = 2_000,
    fee_rate: float = 0.07,
    fee_exponent: float = 1.0,
) -> LabelColumns:
    n, hs = len(states), tuple(int(h) for h in horizons_s)
    raw, tick = states.raw, states.tick_ms
    w = segment(states)
    win = window_of_rows(w, n)
    in_win = win >= 0
    wsafe = np.maximum(win, 0)
    end_ms = np.where(in_win, w.end_s[wsafe] * 1000.0, -np.inf) if len(w) else np.full(n, -np.inf)
    settle = np.where(in_win, w.settle[wsafe], np.nan) if len(w) else np.full(n, np.nan)
    stale = (states.flags & (STALE_BINANCE | STALE_POLY)) != 0

    def fee(p: np.ndarray) -> np.ndarray:
        return np.asarray(fee_per_share(np.nan_to_num(p), fee_rate, fee_exponent))

    up_ask, dn_ask = raw[:, RAW_INDEX["up_ask_px_0"]], raw[:, RAW_INDEX["dn_ask_px_0"]]
    up_bid, dn_bid = raw[:, RAW_INDEX["up_bid_px_0"]], raw[:, RAW_INDEX["dn_bid_px_0"]]
    sh_up, sh_dn = 1.0 / up_ask, 1.0 / dn_ask
    fee_up, fee_dn = sh_up * fee(up_ask), sh_dn * fee(dn_ask)
    entry_ok = in_win & np.isfinite(up_ask) & np.isfinite(dn_ask) & ~stale

    rewards = np.zeros((n, len(hs), 3), np.float32)
    valid = np.zeros((n, len(hs)), np.uint8)
    kind = np.full((n, len(hs)), EXIT_INVALID, np.uint8)
    for k, h in enumerate(hs):
        target = tick + h * 1000
        by_settle = target >= end_ms
        j = np.clip(np.searchsorted(tick, target), 0, max(n - 1, 0))
        jm = np.maximum(j - 1, 0)
        j = np.where(np.abs(tick[jm] - target) < np.abs(tick[j] - target), jm, j)
        near = (np.abs(tick[j] - target) <= tolerance_ms) & (win[j] == win) & ~stale[j]
        ub, db = up_bid[j], dn_bid[j]
        fut_ok = near & np.isfinite(ub) & np.isfinite(db)
        set_ok = by_settle & np.isfinite(settle)
        exit_up = np.where(by_settle, settle, ub - fee(ub))
        exit_dn = np.where(by_settle, 1.0 - settle, db - fee(db))
        ok = entry_ok & np.where(by_settle, set_ok, fut_ok)
        rewards[:, k, 1] = np.where(ok, sh_up * exit_up - 1.0 - fee_up, 0.0)
        rewards[:, k, 2] = np.where(ok, sh_dn * exit_dn - 1.0 - fee_dn, 0.0)
        valid[:, k] = ok
        kind[:, k] = np.where(ok, np.where(by_settle, EXIT_SETTLEMENT, EXIT_FUTURE_BID), EXIT_INVALID)
    best = np.where(valid.astype(bool), rewards.argmax(axis=2), -1).astype(np.int8)
    return LabelColumns(tick_ms=tick.copy(), horizons_s=hs, rewards=rewards, best=best, valid=valid, exit_kind=kind)


def label_columns(
    states: StateColumns,
    horizons_s: Sequence[int],
    *,
    tolerance_ms: int = 2_000,
    fee_rate: float = 0.07,
    fee_exponent: float = 1.0,
    prefer_labeler: bool = True,
) -> tuple[LabelColumns, str]:
    """Labels from ``labeler_svc.labels.label_columns`` when importable, else the fallback.
    Returns ``(labels, source)`` with source ``"labeler_svc"`` or ``"trainer_fallback"``."""
    if prefer_labeler:
        try:
            from labeler_svc.labels import label_columns as lc
        except ImportError:
            pass
        else:
            return (
                lc(states, tuple(horizons_s), tolerance_ms=tolerance_ms, fee_rate=fee_rate, fee_exponent=fee_exponent),
                "labeler_svc",
            )
    return (
        fallback_labels(states, horizons_s, tolerance_ms=tolerance_ms, fee_rate=fee_rate, fee_exponent=fee_exponent),
        "trainer_fallback",
    )


def future_rows(
    states: StateColumns, horizon_s: int, tolerance_ms: int = 2_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every row: ``(j, ok, by_settle, settle)`` = the row nearest t + h in the same window
    (``ok`` when within tolerance), whether the window ends first, and that window's settlement."""
    n, tick = len(states), states.tick_ms
    w = segment(states)
    win = window_of_rows(w, n)
    wsafe = np.maximum(win, 0)
    end_ms = np.where(win >= 0, w.end_s[wsafe] * 1000.0, -np.inf) if len(w) else np.full(n, -np.inf)
    settle = np.where(win >= 0, w.settle[wsafe], np.nan) if len(w) else np.full(n, np.nan)
    target = tick + int(horizon_s) * 1000
    j = np.clip(np.searchsorted(tick, target), 0, max(n - 1, 0))
    jm = np.maximum(j - 1, 0)
    j = np.where(np.abs(tick[jm] - target) < np.abs(tick[j] - target), jm, j)
    ok = (np.abs(tick[j] - target) <= tolerance_ms) & (win[j] == win) & (win >= 0)
    return j, ok, target >= end_ms, settle
