"""Synthetic but plausible market states (tests, benchmarks, demos): vectorised, deterministic per seed.

Prices follow quantised random walks (Binance 0.1 USD, Polymarket 0.01), the Polymarket book
changes about once a second, the Polymarket market rolls every 15 minutes; features come from
:func:`common.features.market_features`, so payloads look like the observer's.
"""

from __future__ import annotations

import numpy as np

from common.features import FEATURE_SET, market_features
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, encode_state

WINDOW_MS = 15 * 60 * 1000


def pm_window(start_ms: int) -> PolymarketWindow:
    """The (synthetic) BTC 15-minute Polymarket market starting at ``start_ms``."""
    rng = np.random.default_rng(start_ms)
    return PolymarketWindow(
        slug=f"btc-updown-15m-{start_ms // 1000}",
        condition_id="0x" + rng.bytes(32).hex(),
        up_token="".join(map(str, rng.integers(0, 10, 77))),
        down_token="".join(map(str, rng.integers(0, 10, 77))),
        start_ms=start_ms,
        end_ms=start_ms + WINDOW_MS,
    )


def synth_raw(ticks_ms: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, N_RAW) float64 raw fields for the given tick times."""
    rng = np.random.default_rng(seed)
    n = len(ticks_ms)
    raw = np.full((n, N_RAW), np.nan)
    col = RAW_INDEX.__getitem__
    bn = 95_000 + np.round(np.cumsum(rng.normal(0, 3, n)), 1)
    raw[:, col("bn_bid")] = bn - 0.1
    raw[:, col("bn_ask")] = bn
    raw[:, col("bn_last_px")] = bn
    raw[:, col("bn_bid_sz")] = np.round(rng.exponential(2, n), 3)
    raw[:, col("bn_ask_sz")] = np.round(rng.exponential(2, n), 3)
    for name, lag in (("bn_close_0", 0), ("bn_close_1m", 120), ("bn_close_5m", 600), ("bn_close_10m", 1200)):
        raw[:, col(name)] = bn[np.maximum(np.arange(n) - lag, 0)]
    raw[:, col("bn_close_60m")] = bn[0]
    raw[:, col("bn_rv_1h")] = 0.004
    raw[:, col("bn_vol_1h")] = 850.25
    raw[:, col("bn_vol_24h_per_h")] = 910.5
    raw[:, col("bn_buy_notional")] = np.round(rng.exponential(2e5, n), 2)
    raw[:, col("bn_sell_notional")] = np.round(rng.exponential(2e5, n), 2)
    raw[:, col("bn_net_10s")] = np.round(rng.normal(0, 5e4, n), 2)
    raw[:, col("bn_net_prev_10s")] = np.roll(raw[:, col("bn_net_10s")], 20)
    raw[:, col("bn_trades_10s")] = rng.integers(0, 400, n)
    raw[:, col("bn_large_age_s")] = np.round(rng.uniform(0, 600, n), 1)
    raw[:, col("age_binance_ms")] = rng.integers(0, 200, n)
    raw[:, col("age_poly_ms")] = rng.integers(0, 2000, n)
    # Polymarket: Up mid random walk, changes on about half the ticks
    steps = rng.choice([-0.01, 0.0, 0.0, 0.01], n) * (rng.random(n) < 0.5)
    mid = np.clip(0.5 + np.cumsum(steps), 0.03, 0.97).round(2)
    for i in range(5):
        for side, sign in (("bid", -1), ("ask", 1)):
            px = np.clip(mid + sign * (0.01 * (i + 1)), 0.01, 0.99).round(2)
            raw[:, col(f"up_{side}_px_{i}")] = px
            raw[:, col(f"dn_{'ask' if side == 'bid' else 'bid'}_px_{i}")] = (1 - px).round(2)
            sz = np.round(rng.exponential(300, n), 2)
            sz[rng.random(n) < 0.6] = np.nan  # carried forward below
            raw[:, col(f"up_{side}_sz_{i}")] = sz
            raw[:, col(f"dn_{'ask' if side == 'bid' else 'bid'}_sz_{i}")] = sz
    # forward-fill sizes (books change less often than ticks)
    for j in range(N_RAW):
        v = raw[:, j]
        if np.isnan(v).any() and not np.isnan(v).all() and RAW_INDEX.get("up_bid_sz_0", -1) <= j:
            idx = np.where(~np.isnan(v), np.arange(n), 0)
            np.maximum.accumulate(idx, out=idx)
            raw[:, j] = v[idx]
            raw[np.isnan(raw[:, j]), j] = 100.0
    raw[:, col("up_last_trade_px")] = mid
    raw[:, col("dn_last_trade_px")] = (1 - mid).round(2)
    start = (ticks_ms // WINDOW_MS) * WINDOW_MS
    raw[:, col("pm_start_s")] = start // 1000
    raw[:, col("pm_end_s")] = (start + WINDOW_MS) // 1000
    raw[:, col("pm_prev_end_s")] = start // 1000
    raw[:, col("pm_prev_settle_up")] = (start // WINDOW_MS) % 2
    raw[:, col("up_mid_std_5m")] = 0.012
    raw[:, col("up_mid_n_5m")] = 600
    return raw


def synth_states(market: str, start_ms: int, n: int, tick_ms: int = 500, seed: int = 0) -> list[State]:
    """``n`` consecutive states of ``market`` from ``start_ms`` on the tick grid."""
    ticks = start_ms + tick_ms * np.arange(n, dtype=np.int64)
    raw = synth_raw(ticks, seed)
    feats = market_features(raw, ticks, tick_s=tick_ms / 1000.0)
    windows: dict[int, PolymarketWindow] = {}
    out = []
    for i in range(n):
        t = int(ticks[i])
        w = t // WINDOW_MS * WINDOW_MS
        pm = windows.get(w) or windows.setdefault(w, pm_window(w))
        out.append(State(market, t, raw[i], feats[i], FEATURE_SET, 0, pm))
    return out


def synth_payloads(market: str, start_ms: int, n: int, tick_ms: int = 500, seed: int = 0) -> list[tuple[str, bytes]]:
    """``(entry_id, encoded_state)`` pairs, as an observer would XADD them."""
    return [(f"{s.tick_ms}-0", encode_state(s)) for s in synth_states(market, start_ms, n, tick_ms, seed)]
