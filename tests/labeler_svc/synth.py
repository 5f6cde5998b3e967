"""Synthetic states of a rolling 15-minute Up/Down market on a 500 ms grid, with realistic books."""

from __future__ import annotations

import numpy as np

from common.features import FEATURE_SET, N_MARKET_FEATURES
from common.schema import (
    N_RAW,
    RAW_INDEX,
    PolymarketWindow,
    State,
    StateColumns,
    decode_states_columns,
    encode_state,
)

MARKET = "BTC-15M"
TICK = 500
WINDOW = 900_000
T0 = (1_700_000_000_000 // WINDOW) * WINDOW + WINDOW  # a window start


def _set(raw: np.ndarray, name: str, v: float) -> None:
    raw[RAW_INDEX[name]] = v


def make_states(
    n: int,
    *,
    t0: int = T0,
    seed: int = 1,
    settle_delay_ms: int = 20_000,
    drop: tuple[int, ...] = (),
    stale: tuple[int, ...] = (),
) -> list[State]:
    """``n`` ticks from ``t0`` (indices in ``drop`` missing, in ``stale`` flagged STALE_POLY).

    Each window's outcome is Up iff its last Up mid > 0.5; states from ``settle_delay_ms`` after
    a rollover carry the previous window's settlement in ``pm_prev_*``.
    """
    from common.schema import STALE_POLY

    rng = np.random.default_rng(seed)
    ticks = t0 + TICK * np.arange(n, dtype=np.int64)
    mids = np.empty(n)
    m = 0.5
    outcome: dict[int, float] = {}
    for i, t in enumerate(ticks):
        start = int(t // WINDOW * WINDOW)
        if i == 0 or start != int(ticks[i - 1] // WINDOW * WINDOW):
            m = 0.5
        m = float(np.clip(m + rng.normal(0, 0.01), 0.03, 0.97))
        mids[i] = m
        outcome[start + WINDOW] = 1.0 if m > 0.5 else 0.0
    out: list[State] = []
    drops = set(drop)
    stales = set(stale)
    for i, t in enumerate(ticks):
        if i in drops:
            continue
        t = int(t)
        start = t // WINDOW * WINDOW
        end = start + WINDOW
        raw = np.full(N_RAW, np.nan)
        mid = mids[i]
        spread = 0.01 + 0.01 * (i % 3)
        up_bid = round(max(0.01, mid - spread / 2), 3)
        up_ask = round(min(0.99, up_bid + spread), 3)
        for lvl in range(5):
            _set(raw, f"up_bid_px_{lvl}", round(up_bid - 0.01 * lvl, 3))
            _set(raw, f"up_ask_px_{lvl}", round(up_ask + 0.01 * lvl, 3))
            _set(raw, f"dn_bid_px_{lvl}", round(1 - up_ask - 0.01 * lvl, 3))
            _set(raw, f"dn_ask_px_{lvl}", round(1 - up_bid + 0.01 * lvl, 3))
            for side in ("up_bid", "up_ask", "dn_bid", "dn_ask"):
                _set(raw, f"{side}_sz_{lvl}", float(100 + 10 * lvl + i % 7))
        _set(raw, "pm_start_s", start / 1000)
        _set(raw, "pm_end_s", end / 1000)
        prev_end = start
        _set(raw, "pm_prev_end_s", prev_end / 1000)
        if t >= prev_end + settle_delay_ms and prev_end in outcome:
            _set(raw, "pm_prev_settle_up", outcome[prev_end])
        _set(raw, "bn_bid", 60_000.0 + i)
        _set(raw, "bn_ask", 60_000.5 + i)
        pm = PolymarketWindow(f"btc-updown-15m-{start // 1000}", "0xc0ffee", "111", "222", start, end)
        flags = STALE_POLY if i in stales else 0
        out.append(State(MARKET, t, raw, np.zeros(N_MARKET_FEATURES, np.float32), FEATURE_SET, flags, pm))
    return out


def columns(states: list[State]) -> StateColumns:
    cols, bad = decode_states_columns([encode_state(s) for s in states])
    assert not bad
    return cols
