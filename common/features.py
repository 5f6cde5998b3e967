"""The feature function: the one place features are computed.

The observer (every tick, all markets at once), the trainer's replay environment (whole
archives at once) and the trader (every tick) call :func:`market_features` on the raw fields a
state carries, so training and serving cannot drift apart.

Feature set ``market-v1`` = the upstream's 15 market features (its 18 minus the three position
features, which belong to the agent: :func:`agent_features`), with the upstream's defects fixed:

* ``vol_expansion`` is the last hour's volume against the mean hourly volume of the last 24 h
  (upstream defined 24 h volume as 24 x 1 h volume, so the feature was always 0);
* ``vol_5m`` is the std of the Up mid over a real 300 s window (upstream: 30 ticks = 15 s);
* trade flow decays continuously in event time with a half-life (upstream: a 10 % step once a
  minute, which made ``cvd_acceleration`` jump every minute);
* ``cvd_acceleration`` is the change of signed taker notional between the last two 10 s windows;
* ``trade_intensity`` is log-scaled instead of clamping at 10 trades/s;
* ``large_trade_flag`` decays with a 10 s time constant since the last large trade;
* ``time_remaining`` is the fraction of the window left, for any window length.

Feature set ``market-v2`` adds what an Up/Down market is priced on and upstream never
showed its policy, so a lead-lag between the venues can be learnt at all:

* ``up_mid``: the Up token's mid price, as ``2 * mid - 1`` (the price the policy would pay);
* ``strike_z``: how far Binance has moved since the window opened, in standard deviations of the
  move still to come: ``ln(S / S_open) / (sigma_1m * sqrt(minutes left))`` / 3, with ``S_open`` the
  raw field ``bn_open_px`` and ``sigma_1m`` from the last hour's 1-minute returns;
* ``fair_gap``: ``Phi(z) - mid`` (x 2): the Up probability that Binance implies now minus the
  price Polymarket shows; positive when the Up token is cheap against Binance.

Feature set ``market-v3`` (this one) makes every feature correct at any tick (0.5 s to 1 minute) and
window length (5 minutes to 4 hours):

* ``vol_5m`` still needs a 300 s window of Up mids, but the minimum sample count fits the tick:
  half the samples the window can hold, between 3 and 30 (v2 asked 30: always 0 above a 10 s tick);
* ``spread_pct`` is the relative spread ``(ask - bid) / mid`` on a log scale that reaches 1 only at a
  placeholder book (relative spread 2): ``log1p(rel / 0.01) / log1p(200)`` (v2's ``20 * rel`` clipped
  at 1.0 for an ordinary one-cent spread at a 20-cent mid);
* stale inputs are neutralised: when the state's Binance side is stale (``STALE_BINANCE``) every
  Binance-derived feature is 0, when its Polymarket side is stale (``STALE_POLY``) every book-derived
  one is 0 (v2 showed trade flow frozen at its last value for hours after a feed ended), and the two
  flags are features ``binance_stale`` / ``poly_stale`` (1.0 = stale), so the policy sees them.

The tick length comes from the caller (``tick_s``: the observer's and trader's setting) or, when not
given, from the spacing of the rows' ticks (default 0.5 s for a single tick). Staleness comes from the
state's ``flags`` when given (the observer's verdict, carried by the state), else from its recorded
ages against ``STALE_*_MS`` (at least two ticks).

Every feature is finite and in [-1, 1]; a missing input gives 0, never NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.schema import N_RAW, RAW_INDEX, STALE_BINANCE, STALE_POLY

FEATURE_SET = "market-v3"
MARKET_FEATURES: tuple[str, ...] = (
    "returns_1m",
    "returns_5m",
    "returns_10m",
    "ob_imbalance_l1",
    "ob_imbalance_l5",
    "trade_flow_imbalance",
    "cvd_acceleration",
    "spread_pct",
    "trade_intensity",
    "large_trade_flag",
    "vol_5m",
    "vol_expansion",
    "time_remaining",
    "vol_regime",
    "trend_regime",
    "up_mid",
    "strike_z",
    "fair_gap",
    "binance_stale",
    "poly_stale",
)
AGENT_FEATURES: tuple[str, ...] = ("has_position", "position_side", "position_pnl")
OBSERVATION_FEATURES: tuple[str, ...] = MARKET_FEATURES + AGENT_FEATURES
N_MARKET_FEATURES = len(MARKET_FEATURES)
N_OBS = len(OBSERVATION_FEATURES)

# constants of the market features
RETURN_SCALE = 50.0
SPREAD_UNIT = 0.01  # relative spread of one log step
SPREAD_FULL = 2.0  # relative spread that maps to 1.0 (a 0.01/0.99 placeholder book)
VOL5M_SCALE = 20.0
VOL5M_WINDOW_S = 300.0
VOL5M_MIN_SAMPLES = 30  # at most (the v2 rule at the default 0.5 s tick)
VOL5M_FLOOR_SAMPLES = 3  # at least: a std of fewer samples is noise
VOL5M_COVERAGE = 0.5  # fraction of the window's possible samples required
DEFAULT_TICK_S = 0.5
STALE_BINANCE_MS = 5_000.0  # the observer's defaults (common.settings), used when no flags are given
STALE_POLY_MS = 60_000.0
CVD_SCALE_USD = 1e6
INTENSITY_FULL_SCALE = 100.0  # trades/s that map to 1.0
LARGE_TRADE_TAU_S = 10.0
VOL_REGIME_RV = 0.01
TREND_REGIME_RET = 0.005
STRIKE_Z_SCALE = 3.0
FAIR_GAP_SCALE = 2.0
# features computed from each venue: zeroed when that venue's inputs are stale
BINANCE_DERIVED = (0, 1, 2, 5, 6, 8, 9, 11, 13, 14, 16, 17)
POLY_DERIVED = (3, 4, 7, 10, 15, 17)
MIN_MINUTES_LEFT = 5.0 / 60.0  # sigma of the remaining move is floored at 5 s of it

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _col(raw: F64, name: str) -> F64:
    return raw[:, RAW_INDEX[name]]


def _safe_ratio(num: F64, den: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((den != 0) & np.isfinite(den) & np.isfinite(num), num / den, 0.0)
    return np.asarray(out, dtype=np.float64)


def _ret(c0: F64, c_lag: F64) -> F64:
    return _safe_ratio(c0 - c_lag, c_lag)


def norm_cdf(z: F64) -> F64:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26 erf; absolute error < 1.5e-7)."""
    x = np.abs(np.asarray(z, dtype=np.float64)) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return np.asarray(0.5 * (1.0 + np.sign(z) * erf), dtype=np.float64)


def infer_tick_s(tick_ms: npt.NDArray[np.int64]) -> float:
    """The tick length of rows of one market: the median spacing of their distinct ticks (0.5 s if one)."""
    t = np.asarray(tick_ms, dtype=np.int64)
    d = np.diff(t)
    if d.size and d.min() < 0:  # not in order: sort first (the trainer's archives are)
        d = np.diff(np.sort(t))
    d = d[d > 0]
    return float(np.median(d)) / 1000.0 if d.size else DEFAULT_TICK_S


def vol5m_min_samples(tick_s: float) -> int:
    """Samples ``vol_5m`` needs in its 300 s window at this tick (between 3 and 30)."""
    fit = int(VOL5M_COVERAGE * VOL5M_WINDOW_S / max(float(tick_s), 1e-3))
    return max(VOL5M_FLOOR_SAMPLES, min(VOL5M_MIN_SAMPLES, fit))


def market_features(
    raw: F64,
    tick_ms: npt.NDArray[np.int64],
    flags: npt.ArrayLike | None = None,
    *,
    tick_s: float | None = None,
) -> F32:
    """Features ``FEATURE_SET`` of N states: ``raw`` (N, N_RAW), ``tick_ms`` (N,), the states' ``flags``
    (N,) when known and the tick length -> (N, N_MARKET_FEATURES) float32 (see the module doc)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != N_RAW:
        raise ValueError(f"raw must have shape (N, {N_RAW}), got {raw.shape}")
    n = raw.shape[0]
    out = np.zeros((n, N_MARKET_FEATURES), dtype=np.float64)
    t_s = np.asarray(tick_ms, dtype=np.float64) / 1000.0
    tick = infer_tick_s(np.asarray(tick_ms)) if tick_s is None else float(tick_s)
    if flags is not None:
        fl = np.asarray(flags, dtype=np.int64).reshape(n)
        stale_bn, stale_pm = (fl & STALE_BINANCE) != 0, (fl & STALE_POLY) != 0
    else:
        age_bn, age_pm = _col(raw, "age_binance_ms"), _col(raw, "age_poly_ms")
        stale_bn = np.isfinite(age_bn) & (age_bn > max(STALE_BINANCE_MS, 2000.0 * tick))
        stale_pm = np.isfinite(age_pm) & (age_pm > max(STALE_POLY_MS, 2000.0 * tick))

    c0 = _col(raw, "bn_close_0")
    out[:, 0] = RETURN_SCALE * _ret(c0, _col(raw, "bn_close_1m"))
    out[:, 1] = RETURN_SCALE * _ret(c0, _col(raw, "bn_close_5m"))
    out[:, 2] = RETURN_SCALE * _ret(c0, _col(raw, "bn_close_10m"))

    bid_sz = raw[:, [RAW_INDEX[f"up_bid_sz_{i}"] for i in range(5)]]
    ask_sz = raw[:, [RAW_INDEX[f"up_ask_sz_{i}"] for i in range(5)]]
    b1, a1 = np.nan_to_num(bid_sz[:, 0]), np.nan_to_num(ask_sz[:, 0])
    out[:, 3] = _safe_ratio(b1 - a1, b1 + a1)
    b5, a5 = np.nansum(bid_sz, axis=1), np.nansum(ask_sz, axis=1)
    out[:, 4] = _safe_ratio(b5 - a5, b5 + a5)

    buy, sell = np.nan_to_num(_col(raw, "bn_buy_notional")), np.nan_to_num(_col(raw, "bn_sell_notional"))
    out[:, 5] = _safe_ratio(buy - sell, buy + sell)
    d_net = np.nan_to_num(_col(raw, "bn_net_10s")) - np.nan_to_num(_col(raw, "bn_net_prev_10s"))
    out[:, 6] = d_net / CVD_SCALE_USD

    bid, ask = _col(raw, "up_bid_px_0"), _col(raw, "up_ask_px_0")
    both = np.isfinite(bid) & np.isfinite(ask)
    mid = np.where(both, (bid + ask) / 2.0, 0.0)
    rel = np.maximum(_safe_ratio(ask - bid, np.maximum(0.01, mid)), 0.0)
    out[:, 7] = np.where(both, np.log1p(rel / SPREAD_UNIT) / np.log1p(SPREAD_FULL / SPREAD_UNIT), 0.0)

    rate = np.nan_to_num(_col(raw, "bn_trades_10s")) / 10.0
    out[:, 8] = np.log1p(np.maximum(rate, 0.0)) / np.log1p(INTENSITY_FULL_SCALE)

    age = _col(raw, "bn_large_age_s")
    out[:, 9] = np.where(np.isfinite(age), np.exp(-np.maximum(age, 0.0) / LARGE_TRADE_TAU_S), 0.0)

    std5 = _col(raw, "up_mid_std_5m")
    enough = np.nan_to_num(_col(raw, "up_mid_n_5m")) >= vol5m_min_samples(tick)
    out[:, 10] = np.where(enough & np.isfinite(std5), VOL5M_SCALE * np.nan_to_num(std5), 0.0)

    v1h, v24 = _col(raw, "bn_vol_1h"), _col(raw, "bn_vol_24h_per_h")
    ok = np.isfinite(v1h) & np.isfinite(v24) & (v24 > 0)
    out[:, 11] = np.where(ok, _safe_ratio(v1h, v24) - 1.0, 0.0)

    start, end = _col(raw, "pm_start_s"), _col(raw, "pm_end_s")
    span = end - start
    okw = np.isfinite(start) & np.isfinite(end) & (span > 0)
    out[:, 12] = np.where(okw, np.clip(_safe_ratio(end - t_s, span), 0.0, 1.0), 0.0)

    rv = _col(raw, "bn_rv_1h")
    out[:, 13] = np.where(np.isfinite(rv) & (rv > VOL_REGIME_RV), 1.0, 0.0)
    r1h = _ret(c0, _col(raw, "bn_close_60m"))
    out[:, 14] = np.where(np.abs(r1h) > TREND_REGIME_RET, 1.0, 0.0)

    out[:, 15] = np.where(both, 2.0 * mid - 1.0, 0.0)
    px = _col(raw, "bn_last_px")
    s_open = _col(raw, "bn_open_px")
    sigma = rv / np.sqrt(60.0) * np.sqrt(np.maximum((end - t_s) / 60.0, MIN_MINUTES_LEFT))
    okz = okw & np.isfinite(px) & np.isfinite(s_open) & (px > 0) & (s_open > 0) & np.isfinite(sigma) & (sigma > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(okz, np.log(np.where(okz, px / s_open, 1.0)) / np.where(okz, sigma, 1.0), 0.0)
    out[:, 16] = z / STRIKE_Z_SCALE
    out[:, 17] = np.where(okz & both, FAIR_GAP_SCALE * (norm_cdf(z) - mid), 0.0)

    out[np.ix_(stale_bn, BINANCE_DERIVED)] = 0.0
    out[np.ix_(stale_pm, POLY_DERIVED)] = 0.0
    out[:, 18] = stale_bn
    out[:, 19] = stale_pm
    np.clip(out, -1.0, 1.0, out=out)
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)


def agent_features(has_position: F64, side: F64, pnl_frac: F64) -> F32:
    """Position features of N agents: (N, 3) = has_position (0/1), side (+1 Up, -1 Down, 0 flat),
    unrealised return on the position's cost, clamped to [-1, 1]."""
    hp = np.asarray(has_position, dtype=np.float64)
    sd = np.asarray(side, dtype=np.float64)
    pnl = np.clip(np.nan_to_num(np.asarray(pnl_frac, dtype=np.float64)), -1.0, 1.0)
    return np.stack([hp, sd, pnl * (hp != 0)], axis=1).astype(np.float32)


def observation(market: F32, agent: F32) -> F32:
    """The policy's input: market features followed by agent features, (N, N_OBS) float32."""
    return np.concatenate([market, agent], axis=1).astype(np.float32, copy=False)
