"""Synthetic but plausible market states (tests, benchmarks, demos): vectorised, deterministic per seed.

Fields follow the observer's definitions (``observer_svc.binance_aggregates``, ``observer_svc.polymarket_state``)
on simulated trades and books, with per-tick behaviour compared against the recorded replay
(``benchmarks.scale_real``): Binance prices on the cent grid move on about a third of the ticks; trades arrive
in bursts; the taker notionals decay with a 60 s half-life, ``bn_net_*`` and ``bn_trades_10s`` are sums over
1-second buckets of the last 10 s; closes are the 1-minute bars' (they change once a minute); the ages of the
Polymarket book and of the last large trade grow by the tick and reset at the next one, the newest Binance frame's
follows the depth stream's 100 ms phase. Polymarket prices are a 0.01 random walk, each level's size a log random walk
that changes on about half the ticks (the Borisz42 capture's rate); the market rolls every 15 minutes; features
come from :func:`common.features.market_features`, so payloads look like the observer's.
"""

from __future__ import annotations

import numpy as np

from common.features import FEATURE_SET, market_features
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, encode_state

WINDOW_MS = 15 * 60 * 1000
HALF_LIFE_S = 60.0  # the observer's default ``flow_half_life_s``


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


def _decay(x: np.ndarray, f: float, y0: float = 0.0) -> np.ndarray:
    """``y[t] = f * y[t-1] + x[t]`` (``y[-1] = y0``), vectorised in blocks short enough for ``f**-k``."""
    y = np.empty(len(x))
    blk = max(1, min(4096, int(200 / max(-np.log(f), 1e-9))))
    pw = f ** np.arange(1, blk + 1)
    for i in range(0, len(x), blk):
        k = min(blk, len(x) - i)
        y[i : i + k] = pw[:k] * (y0 + np.cumsum(x[i : i + k] / pw[:k]))
        y0 = y[i + k - 1]
    return y


def _ages(ticks_ms: np.ndarray, event: np.ndarray, lag_ms: np.ndarray, first_ms: int) -> np.ndarray:
    """Milliseconds from each tick back to the last event (at ``tick - lag_ms`` on event ticks), ``first_ms`` before."""
    at = np.where(event, ticks_ms - lag_ms, first_ms)
    idx = np.maximum.accumulate(np.where(event, np.arange(len(ticks_ms)), -1))
    last = np.where(idx >= 0, at[np.maximum(idx, 0)], first_ms)
    return (ticks_ms - last).astype(np.float64)


def _bar_close(ticks_ms: np.ndarray, px: np.ndarray, lag_min: int) -> np.ndarray:
    """Close of the 1-minute bar ``lag_min`` minutes before each tick's minute (``lag_min=0``: the price now)."""
    if lag_min == 0:
        return px.copy()
    end = (ticks_ms // 60_000 - lag_min + 1) * 60_000  # the bar's last tick is the last one before ``end``
    return px[np.maximum(np.searchsorted(ticks_ms, end, "left") - 1, 0)]


def _binance(raw: np.ndarray, ticks_ms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill the ``bn_*`` fields and ``age_binance_ms``; returns the mid price series."""
    n, col = len(ticks_ms), RAW_INDEX.__getitem__
    moves = rng.random(n) < 0.33  # the recorded BTCUSDT best bid moves on a third of the 0.5 s ticks
    bn = np.round(95_000 + np.cumsum(rng.normal(0, 6, n) * moves), 2)
    bid = np.round(bn - 0.01, 2)
    raw[:, col("bn_bid")], raw[:, col("bn_ask")] = bid, bn
    for side in ("bid", "ask"):  # queue sizes at the touch: persistent, 1e-5 BTC lots
        z = _decay(rng.normal(0, 0.6, n), 0.6)
        raw[:, col(f"bn_{side}_sz")] = np.round(np.exp(z) * 1.5, 5)
    # trades: bursty Poisson arrivals (~25 a second), half taker buys; notional = qty x price
    rate = 14.0 * np.exp(_decay(rng.normal(0, 0.08, n), 0.995))
    k = rng.poisson(rate)
    kb = rng.binomial(k, 0.5)
    qty = [np.round(rng.gamma(np.maximum(m, 1), 0.025) * (m > 0), 5) for m in (kb, k - kb)]
    buy, sell = qty[0] * bn, qty[1] * bid
    last_buy = np.maximum.accumulate(np.where(k > 0, np.arange(n), 0))
    raw[:, col("bn_last_px")] = np.where(kb[last_buy] * 2 >= k[last_buy], bn, bid)[np.arange(n)]
    for name, lag in (("bn_close_0", 0), ("bn_close_1m", 1), ("bn_close_5m", 5), ("bn_close_10m", 10),
                      ("bn_close_60m", 60)):  # fmt: skip
        raw[:, col(name)] = _bar_close(ticks_ms, raw[:, col("bn_last_px")], lag)
    raw[:, col("bn_rv_1h")] = 0.004
    raw[:, col("bn_vol_1h")] = 850.25
    raw[:, col("bn_vol_24h_per_h")] = 910.5
    f = 0.5 ** (0.5 / HALF_LIFE_S)
    raw[:, col("bn_buy_notional")] = _decay(buy, f, float(buy.mean()) / (1 - f))
    raw[:, col("bn_sell_notional")] = _decay(sell, f, float(sell.mean()) / (1 - f))
    # 1-second buckets of trade time: the last 10 s, and the 10 s before
    sec = (ticks_ms - 1) // 1000
    start, prev = np.searchsorted(sec, sec - 9), np.searchsorted(sec, sec - 19)
    for name, v in (("net", buy - sell), ("cnt", k.astype(np.float64))):
        cs = np.concatenate([[0.0], np.cumsum(v)])
        now, before = cs[np.arange(1, n + 1)] - cs[start], cs[start] - cs[prev]
        if name == "net":
            raw[:, col("bn_net_10s")], raw[:, col("bn_net_prev_10s")] = now, before
        else:
            raw[:, col("bn_trades_10s")] = np.round(now)
    large = rng.random(n) < 1 - np.exp(-0.06 * k)  # a trade > 10x the median notional
    t0 = int(ticks_ms[0]) - int(rng.integers(0, 5000))
    raw[:, col("bn_large_age_s")] = _ages(ticks_ms, large, rng.integers(0, 500, n), t0) / 1000.0
    # the newest frame: a depth@100ms update at a slowly drifting phase of the 100 ms grid, unless a trade or
    # bookTicker frame came after it (as in the recording: runs of equal ages, cut by smaller ones)
    phase = np.floor((rng.uniform(0, 100) - 0.2 * np.arange(n)) % 100)
    other = rng.random(n) < 0.45
    raw[:, col("age_binance_ms")] = np.where(other, np.floor(rng.random(n) * (phase + 1)), phase)
    return bn


def _walk_sizes(n: int, rng: np.random.Generator, p_change: float = 0.48) -> np.ndarray:
    """Sizes (2 decimals) of one book level: a mean-reverting log random walk that moves on ``p_change`` of the
    ticks (mostly small steps, sometimes a large one, as in the recorded top of book) and holds in between."""
    moves = rng.random(n) < p_change
    moves[0] = True
    m = int(moves.sum())
    step = np.where(rng.random(m) < 0.85, rng.normal(0, 0.08, m), rng.normal(0, 0.5, m))
    z = np.clip(_decay(step, 0.98, float(rng.normal(0, 1.0))), -4.0, 3.0)
    sizes: np.ndarray = np.round(np.exp(np.log(800.0) + z), 2)
    held: np.ndarray = sizes[np.cumsum(moves) - 1]
    return held


def synth_raw(ticks_ms: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, N_RAW) float64 raw fields for the given tick times."""
    rng = np.random.default_rng(seed)
    n = len(ticks_ms)
    ticks_ms = np.asarray(ticks_ms, dtype=np.int64)
    raw = np.full((n, N_RAW), np.nan)
    col = RAW_INDEX.__getitem__
    _binance(raw, ticks_ms, rng)
    # Polymarket: Up mid random walk, changes on about a fifth of the ticks
    steps = rng.choice([-0.01, 0.0, 0.0, 0.01], n) * (rng.random(n) < 0.5)
    mid = np.clip(0.5 + np.cumsum(steps), 0.03, 0.97).round(2)
    changed = np.zeros(n, bool)
    for i in range(5):
        for side, sign in (("bid", -1), ("ask", 1)):
            px = np.clip(mid + sign * (0.01 * (i + 1)), 0.01, 0.99).round(2)
            raw[:, col(f"up_{side}_px_{i}")] = px
            raw[:, col(f"dn_{'ask' if side == 'bid' else 'bid'}_px_{i}")] = (1 - px).round(2)
            sz = _walk_sizes(n, rng)
            changed[1:] |= sz[1:] != sz[:-1]
            raw[:, col(f"up_{side}_sz_{i}")] = sz
            raw[:, col(f"dn_{'ask' if side == 'bid' else 'bid'}_sz_{i}")] = sz
    changed[1:] |= mid[1:] != mid[:-1]
    raw[:, col("age_poly_ms")] = _ages(ticks_ms, changed, rng.integers(0, 500, n), int(ticks_ms[0]) - 300)
    raw[:, col("up_last_trade_px")] = mid
    raw[:, col("dn_last_trade_px")] = (1 - mid).round(2)
    start = (ticks_ms // WINDOW_MS) * WINDOW_MS
    raw[:, col("pm_start_s")] = start // 1000
    raw[:, col("pm_end_s")] = (start + WINDOW_MS) // 1000
    raw[:, col("pm_prev_end_s")] = start // 1000
    raw[:, col("pm_prev_settle_up")] = (start // WINDOW_MS) % 2
    # two-sided Up mids at the ticks of the last 5 minutes of the current window (population std)
    up_mid = (raw[:, col("up_bid_px_0")] + raw[:, col("up_ask_px_0")]) / 2
    first = np.maximum(np.searchsorted(ticks_ms, start), np.searchsorted(ticks_ms, ticks_ms - 300_000, "right"))
    cnt = np.arange(1, n + 1) - first
    s1, s2 = (np.concatenate([[0.0], np.cumsum(up_mid**p)]) for p in (1, 2))
    m1 = (s1[1:] - s1[first]) / cnt
    raw[:, col("up_mid_std_5m")] = np.sqrt(np.maximum((s2[1:] - s2[first]) / cnt - m1**2, 0.0))
    raw[:, col("up_mid_n_5m")] = cnt
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
