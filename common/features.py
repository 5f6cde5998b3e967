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

Feature set ``market-v2`` (this one) adds what an Up/Down market is priced on and upstream never
showed its policy, so a lead-lag between the venues can be learnt at all:

* ``up_mid``: the Up token's mid price, as ``2 * mid - 1`` (the price the policy would pay);
* ``strike_z``: how far Binance has moved since the window opened, in standard deviations of the
  move still to come: ``ln(S / S_open) / (sigma_1m * sqrt(minutes left))`` / 3, with ``S_open`` the
  raw field ``bn_open_px`` and ``sigma_1m`` from the last hour's 1-minute returns;
* ``fair_gap``: ``Phi(z) - mid`` (x 2): the Up probability that Binance implies now minus the
  price Polymarket shows; positive when the Up token is cheap against Binance.

Every feature is finite and in [-1, 1]; a missing input gives 0, never NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.schema import N_RAW, RAW_INDEX

FEATURE_SET = "market-v2"
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
)
AGENT_FEATURES: tuple[str, ...] = ("has_position", "position_side", "position_pnl")
OBSERVATION_FEATURES: tuple[str, ...] = MARKET_FEATURES + AGENT_FEATURES
N_MARKET_FEATURES = len(MARKET_FEATURES)
N_OBS = len(OBSERVATION_FEATURES)

# constants of the market features
RETURN_SCALE = 50.0
SPREAD_SCALE = 20.0
VOL5M_SCALE = 20.0
VOL5M_MIN_SAMPLES = 30
CVD_SCALE_USD = 1e6
INTENSITY_FULL_SCALE = 100.0  # trades/s that map to 1.0
LARGE_TRADE_TAU_S = 10.0
VOL_REGIME_RV = 0.01
TREND_REGIME_RET = 0.005
STRIKE_Z_SCALE = 3.0
FAIR_GAP_SCALE = 2.0
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


def market_features(raw: F64, tick_ms: npt.NDArray[np.int64]) -> F32:
    """Features ``FEATURE_SET`` of N states: ``raw`` (N, N_RAW) and ``tick_ms`` (N,) -> (N, 18) float32."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != N_RAW:
        raise ValueError(f"raw must have shape (N, {N_RAW}), got {raw.shape}")
    n = raw.shape[0]
    out = np.zeros((n, N_MARKET_FEATURES), dtype=np.float64)
    t_s = np.asarray(tick_ms, dtype=np.float64) / 1000.0

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
    out[:, 7] = np.where(both, SPREAD_SCALE * _safe_ratio(ask - bid, np.maximum(0.01, mid)), 0.0)

    rate = np.nan_to_num(_col(raw, "bn_trades_10s")) / 10.0
    out[:, 8] = np.log1p(np.maximum(rate, 0.0)) / np.log1p(INTENSITY_FULL_SCALE)

    age = _col(raw, "bn_large_age_s")
    out[:, 9] = np.where(np.isfinite(age), np.exp(-np.maximum(age, 0.0) / LARGE_TRADE_TAU_S), 0.0)

    std5 = _col(raw, "up_mid_std_5m")
    enough = np.nan_to_num(_col(raw, "up_mid_n_5m")) >= VOL5M_MIN_SAMPLES
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
