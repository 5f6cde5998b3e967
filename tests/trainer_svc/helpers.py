"""Hand-made states for tiny, exact environment tests."""

from __future__ import annotations

import numpy as np

from common.features import market_features
from common.schema import N_RAW, RAW_INDEX, StateColumns


def tiny_states(rows: list[dict[str, float]], tick0_ms: int = 1_000_000_000_000, tick_ms: int = 500) -> StateColumns:
    """One state per dict (raw field name -> value); everything else NaN."""
    n = len(rows)
    raw = np.full((n, N_RAW), np.nan)
    for i, r in enumerate(rows):
        for k, v in r.items():
            raw[i, RAW_INDEX[k]] = v
    t = tick0_ms + np.arange(n, dtype=np.int64) * tick_ms
    return StateColumns(t, raw, market_features(raw, t), np.zeros(n, np.int32), [""] * n)


def book(up_bid: float, up_ask: float, start_s: float, end_s: float, **extra: float) -> dict[str, float]:
    """Up book and the complementary Down book, in window [start_s, end_s)."""
    return {
        "up_bid_px_0": up_bid,
        "up_ask_px_0": up_ask,
        "dn_bid_px_0": round(1 - up_ask, 6),
        "dn_ask_px_0": round(1 - up_bid, 6),
        "pm_start_s": start_s,
        "pm_end_s": end_s,
        **extra,
    }
