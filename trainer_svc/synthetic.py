"""Synthetic fused states with (or without) a real lead-lag between Binance and Polymarket.

The Binance price is a geometric random walk sampled every tick. Each Polymarket window (15 min by
default) asks "is the price at the end at least the price at the start?"; the Up token's fair value
is ``Phi(ln(S/S_open) / (sigma sqrt(T_rem)))``. The simulated Polymarket book quotes that fair value
computed from the price ``lag_s`` seconds ago (plus small noise): with ``lag_s > 0`` Binance leads and
the lag is tradable; with ``lag_s = 0`` the book is efficient and Binance features predict nothing.
Windows settle 1/0 on the real path; the result shows up ``resolution_delay_s`` into the next window
through ``pm_prev_end_s`` / ``pm_prev_settle_up``, as the observer records it.

Raw fields are filled as the observer would (``common.schema.RAW_FIELDS``: books with 5 levels, bars,
trade flow, ages) from information at or before each tick only; features come from
``common.features.market_features``. Everything is vectorised: 1.2 M states take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter
from scipy.special import ndtr

from common.features import market_features
from common.schema import N_RAW, RAW_INDEX, StateColumns

F64 = npt.NDArray[np.float64]
SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Parameters of the generator (defaults: a strong, tradable 30 s lead-lag)."""

    n_states: int = 36_000
    tick_ms: int = 500
    window_s: int = 900
    start_ms: int = 1_763_856_000_000  # aligned to a window boundary
    lag_s: float = 30.0  # Polymarket quotes the fair value of the price lag_s ago; 0 = efficient
    sigma_annual: float = 0.6
    noise: float = 0.002  # std of the quote noise around the (lagged) fair value
    spreads: tuple[float, ...] = (0.01, 0.01, 0.01, 0.02)  # drawn per tick
    price_tick: float = 0.001
    resolution_delay_s: float = 20.0
    flow_usd_per_tick: float = 150_000.0
    flow_half_life_s: float = 60.0
    seed: int = 0


def _rolling_sum(x: F64, n: int) -> F64:
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    out: F64 = c[idx] - c[np.maximum(idx - n, 0)]
    return out


def _ema_sum(x: F64, decay: float) -> F64:
    """y_i = sum_j decay^(i-j) x_j (an exponentially decayed running sum)."""
    out: F64 = np.asarray(lfilter([1.0], [1.0, -decay], x), dtype=np.float64)
    return out


def generate(cfg: SynthConfig | None = None, **overrides: object) -> StateColumns:
    """States of one rolling market (``cfg`` or keyword overrides of :class:`SynthConfig`)."""
    cfg = cfg or SynthConfig()
    if overrides:
        cfg = SynthConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **overrides})
    rng = np.random.default_rng(cfg.seed)
    n, dt = cfg.n_states, cfg.tick_ms / 1000.0
    per_win = int(round(cfg.window_s / dt))
    warm = int(round(3600 / dt)) + 1  # one hour of history before the first state (bars, returns)
    tail = per_win  # the end of the last window must exist to settle it
    total = warm + n + tail
    sig_s = cfg.sigma_annual / np.sqrt(SECONDS_PER_YEAR)
    z = rng.standard_normal(total)
    logp = np.log(90_000.0) + np.cumsum(z * sig_s * np.sqrt(dt))
    price = np.exp(logp)
    t_ms_all = cfg.start_ms - warm * cfg.tick_ms + np.arange(total, dtype=np.int64) * cfg.tick_ms
    t_s_all = t_ms_all / 1000.0

    sl = slice(warm, warm + n)
    t_ms = t_ms_all[sl]
    t_s = t_s_all[sl]
    raw = np.full((n, N_RAW), np.nan)

    def put(name: str, v: F64 | float) -> None:
        raw[:, RAW_INDEX[name]] = v

    # ------------------------------------------------------------------ Polymarket windows
    w_start = cfg.start_ms / 1000.0 + np.floor((t_s - cfg.start_ms / 1000.0) / cfg.window_s) * cfg.window_s
    w_end = w_start + cfg.window_s
    idx_all = np.arange(total)
    i_open = warm + np.rint((w_start - cfg.start_ms / 1000.0) / dt).astype(np.int64)
    s_open = price[i_open]

    lag = int(round(cfg.lag_s / dt))
    i_seen = idx_all[sl] - lag
    t_rem = np.maximum(w_end - t_s, dt) + cfg.lag_s
    zz = np.log(price[i_seen] / s_open) / (sig_s * np.sqrt(t_rem))
    fair = ndtr(zz)
    mid = np.clip(fair + cfg.noise * rng.standard_normal(n), cfg.price_tick, 1 - cfg.price_tick)
    spread = rng.choice(np.asarray(cfg.spreads), size=n)
    pt = cfg.price_tick
    bid = np.clip(np.floor((mid - spread / 2) / pt + 1e-9) * pt, pt, 1 - 2 * pt)
    ask = np.clip(np.maximum(np.ceil((mid + spread / 2) / pt - 1e-9) * pt, bid + pt), 2 * pt, 1 - pt)
    for i in range(5):
        off = 0.01 * i
        put(f"up_bid_px_{i}", np.where(bid - off > 0, bid - off, np.nan))
        put(f"up_ask_px_{i}", np.where(ask + off < 1, ask + off, np.nan))
        put(f"dn_bid_px_{i}", np.where(1 - ask - off > 0, 1 - ask - off, np.nan))
        put(f"dn_ask_px_{i}", np.where(1 - bid + off < 1, 1 - bid + off, np.nan))
        for tok in ("up", "dn"):
            for side in ("bid", "ask"):
                px = raw[:, RAW_INDEX[f"{tok}_{side}_px_{i}"]]
                sz = np.round(np.exp(rng.normal(np.log(400.0), 1.0, n)), 2)
                put(f"{tok}_{side}_sz_{i}", np.where(np.isfinite(px), sz, np.nan))
    last = np.where(rng.random(n) < 0.5, bid, ask)
    put("up_last_trade_px", last)
    put("dn_last_trade_px", 1.0 - last)
    put("pm_start_s", w_start)
    put("bn_open_px", s_open)
    put("pm_end_s", w_end)
    # previous window's result, known resolution_delay_s after it ended (the first window has none)
    prev_settle = (price[i_open] >= price[np.maximum(i_open - per_win, 0)]).astype(np.float64)
    known = (t_s - w_start >= cfg.resolution_delay_s) & (w_start > cfg.start_ms / 1000.0)
    put("pm_prev_end_s", np.where(w_start > cfg.start_ms / 1000.0, w_start, np.nan))
    put("pm_prev_settle_up", np.where(known, prev_settle, np.nan))
    # Up-mid std over the last 300 s of this window's token
    k = int(round(300 / dt))
    pos_in_win = np.rint((t_s - w_start) / dt).astype(np.int64)
    cnt = np.minimum(pos_in_win + 1, k)
    c1 = np.concatenate([[0.0], np.cumsum(mid)])
    c2 = np.concatenate([[0.0], np.cumsum(mid * mid)])
    j = np.arange(1, n + 1)
    s1, s2 = c1[j] - c1[j - cnt], c2[j] - c2[j - cnt]
    put("up_mid_std_5m", np.sqrt(np.maximum(s2 / cnt - (s1 / cnt) ** 2, 0.0)))
    put("up_mid_n_5m", cnt.astype(np.float64))

    # ------------------------------------------------------------------ Binance
    p = price[sl]
    put("bn_bid", p * (1 - 5e-6))
    put("bn_ask", p * (1 + 5e-6))
    put("bn_bid_sz", np.round(rng.exponential(2.0, n), 3))
    put("bn_ask_sz", np.round(rng.exponential(2.0, n), 3))
    put("bn_last_px", p)
    put("bn_close_0", p)
    bar = np.floor(t_s_all / 60.0).astype(np.int64)
    last_of_bar = np.flatnonzero(np.diff(bar) != 0)  # index of each bar's last tick
    bar_ids = bar[last_of_bar]
    bar_close = price[last_of_bar]
    for name, back in (("bn_close_1m", 1), ("bn_close_5m", 5), ("bn_close_10m", 10), ("bn_close_60m", 60)):
        pos = np.searchsorted(bar_ids, bar[sl] - back)
        okb = (pos < bar_ids.size) & (bar_ids[np.minimum(pos, bar_ids.size - 1)] == bar[sl] - back)
        put(name, np.where(okb, bar_close[np.minimum(pos, bar_ids.size - 1)], np.nan))
    r1 = np.diff(np.log(bar_close), prepend=np.log(bar_close[0]))
    rv = np.sqrt(np.maximum(_rolling_sum(r1 * r1, 60) / 60 - (_rolling_sum(r1, 60) / 60) ** 2, 0)) * np.sqrt(60)
    pos = np.clip(np.searchsorted(bar_ids, bar[sl] - 1), 0, bar_ids.size - 1)
    put("bn_rv_1h", rv[pos])
    hour = np.floor(t_s / 3600.0)
    hv = np.exp(rng.normal(np.log(800.0), 0.3, int(hour.max() - hour.min()) + 2))
    put("bn_vol_1h", hv[(hour - hour.min()).astype(np.int64)])
    put("bn_vol_24h_per_h", 800.0 * np.exp(0.045))

    # trade flow: taker buys dominate on up-ticks (the flow is what moves the price)
    zt = z[sl]
    base = cfg.flow_usd_per_tick * np.exp(rng.normal(-0.125, 0.5, n))
    buy = base / (1 + np.exp(-1.5 * zt))
    sell = base - buy
    decay = 0.5 ** (dt / cfg.flow_half_life_s)
    put("bn_buy_notional", _ema_sum(buy, decay))
    put("bn_sell_notional", _ema_sum(sell, decay))
    w10 = max(1, int(round(10 / dt)))  # at ticks above 10 s: the last tick's flow
    net10 = _rolling_sum(buy - sell, w10)
    put("bn_net_10s", net10)
    put("bn_net_prev_10s", np.concatenate([np.zeros(w10), net10[:-w10]]) if n > w10 else np.zeros(n))
    put("bn_trades_10s", rng.poisson(200.0, n).astype(np.float64))
    large = rng.random(n) < dt / 60.0
    last_large = np.maximum.accumulate(np.where(large, np.arange(n), -1))
    put("bn_large_age_s", np.where(last_large >= 0, (np.arange(n) - last_large) * dt, np.nan))
    put("age_binance_ms", rng.integers(0, 200, n).astype(np.float64))
    put("age_poly_ms", rng.integers(0, 2000, n).astype(np.float64))

    feats = market_features(raw, t_ms, np.zeros(n, np.int32), tick_s=dt)
    slugs_by_start = {int(s): f"synthetic-updown-15m-{int(s)}" for s in np.unique(w_start)}
    return StateColumns(
        tick_ms=t_ms.astype(np.int64),
        raw=raw,
        features=feats,
        flags=np.zeros(n, np.int32),
        slugs=[slugs_by_start[int(s)] for s in w_start],
    )
