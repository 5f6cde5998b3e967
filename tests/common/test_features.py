"""The shared feature function: bounded, NaN-free, and the upstream's defects fixed."""

from __future__ import annotations

import numpy as np

from common.features import MARKET_FEATURES, N_MARKET_FEATURES, N_OBS, agent_features, market_features, observation
from common.schema import N_RAW, RAW_INDEX


def row(**fields: float) -> np.ndarray:
    x = np.full((1, N_RAW), np.nan)
    for k, v in fields.items():
        x[0, RAW_INDEX[k]] = v
    return x


def feat(x: np.ndarray, t_ms: int = 0) -> dict[str, float]:
    f = market_features(x, np.array([t_ms]))[0]
    return dict(zip(MARKET_FEATURES, f.tolist(), strict=True))


def test_missing_inputs_give_zero_not_nan() -> None:
    f = market_features(np.full((4, N_RAW), np.nan), np.zeros(4, dtype=np.int64))
    assert f.shape == (4, N_MARKET_FEATURES) and np.all(f == 0)


def test_random_inputs_bounded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=1e6, size=(1000, N_RAW))
    x[rng.random(x.shape) < 0.2] = np.nan
    f = market_features(x, rng.integers(0, 2**40, 1000))
    assert np.isfinite(f).all() and f.min() >= -1 and f.max() <= 1


def test_returns_and_regimes() -> None:
    f = feat(row(bn_close_0=101.0, bn_close_1m=100.0, bn_close_5m=101.0, bn_close_60m=100.0, bn_rv_1h=0.02))
    assert abs(f["returns_1m"] - 0.5) < 1e-6  # 1% * 50
    assert f["returns_5m"] == 0.0
    assert f["trend_regime"] == 1.0 and f["vol_regime"] == 1.0


def test_vol_expansion_is_not_constant() -> None:
    # upstream: 24h volume = 24 x 1h volume, so the feature was always 0
    assert feat(row(bn_vol_1h=200.0, bn_vol_24h_per_h=100.0))["vol_expansion"] == 1.0
    assert feat(row(bn_vol_1h=50.0, bn_vol_24h_per_h=100.0))["vol_expansion"] == -0.5


def test_vol_5m_needs_a_real_window() -> None:
    assert feat(row(up_mid_std_5m=0.01, up_mid_n_5m=10))["vol_5m"] == 0.0
    assert abs(feat(row(up_mid_std_5m=0.01, up_mid_n_5m=600))["vol_5m"] - 0.2) < 1e-6


def test_book_features() -> None:
    f = feat(row(up_bid_px_0=0.48, up_ask_px_0=0.52, up_bid_sz_0=300, up_ask_sz_0=100, up_bid_sz_1=100))
    assert abs(f["ob_imbalance_l1"] - 0.5) < 1e-6
    assert abs(f["ob_imbalance_l5"] - (400 - 100) / 500) < 1e-6
    assert abs(f["spread_pct"] - np.log1p(0.08 / 0.01) / np.log1p(200)) < 1e-6  # relative spread 8 %


def test_time_remaining_is_window_fraction() -> None:
    f = feat(row(pm_start_s=1000.0, pm_end_s=1900.0), t_ms=1_450_000)
    assert abs(f["time_remaining"] - 0.5) < 1e-6


def test_large_trade_flag_decays_continuously() -> None:
    vals = [feat(row(bn_large_age_s=a))["large_trade_flag"] for a in (0, 5, 10, 20)]
    assert vals[0] == 1.0 and all(a > b for a, b in zip(vals, vals[1:], strict=False))


def test_observation_layout() -> None:
    m = market_features(np.full((2, N_RAW), np.nan), np.zeros(2, dtype=np.int64))
    a = agent_features(np.array([1.0, 0.0]), np.array([-1.0, 0.0]), np.array([3.0, 0.5]))
    o = observation(m, a)
    assert o.shape == (2, N_OBS) and o[0, N_MARKET_FEATURES:].tolist() == [1.0, -1.0, 1.0]
    assert o[1, N_MARKET_FEATURES:].tolist() == [0, 0, 0]


def test_strike_distance_and_fair_gap() -> None:
    """market-v2: where Binance stands against the window's opening price, in sigmas of the move still
    to come, and the Up price Binance implies minus the Polymarket mid."""
    import math

    from common.features import norm_cdf

    sigma_1m = 0.001  # rv_1h = sigma_1m * sqrt(60)
    end_s, t_ms = 1_000_000.0, 1_000_000_000 - 240_000  # 4 minutes left
    base = dict(pm_start_s=end_s - 300, pm_end_s=end_s, bn_rv_1h=sigma_1m * math.sqrt(60), bn_open_px=100.0)
    px = 100.0 * math.exp(0.002)  # +2 sigma_1m; 4 minutes left -> z = 0.002 / (0.001 * 2) = 1
    f = feat(row(**base, bn_last_px=px, up_bid_px_0=0.55, up_ask_px_0=0.57), t_ms)
    assert abs(f["up_mid"] - (2 * 0.56 - 1)) < 1e-6
    assert abs(f["strike_z"] - 1.0 / 3.0) < 1e-6
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # 0.8413: Up is cheap at 0.56
    assert abs(f["fair_gap"] - 2 * (phi1 - 0.56)) < 1e-5 and f["fair_gap"] > 0
    # below the open: z < 0 and Up is dear
    g = feat(row(**base, bn_last_px=100.0 * math.exp(-0.002), up_bid_px_0=0.55, up_ask_px_0=0.57), t_ms)
    assert g["strike_z"] < 0 and g["fair_gap"] < 0
    # unknown open price or volatility: no strike features, never NaN
    for missing in ("bn_open_px", "bn_rv_1h"):
        h = feat(row(**{**base, missing: float("nan")}, bn_last_px=px, up_bid_px_0=0.55, up_ask_px_0=0.57), t_ms)
        assert h["strike_z"] == 0.0 and h["fair_gap"] == 0.0 and abs(h["up_mid"] - 0.12) < 1e-6
    z = np.linspace(-8, 8, 2001)
    exact = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])
    assert np.max(np.abs(norm_cdf(z) - exact)) < 2e-7


# ------------------------------------------------------------------ market-v3: any tick, real ranges, staleness


def test_feature_set_is_v3_with_staleness_visible() -> None:
    from common.features import FEATURE_SET

    assert FEATURE_SET == "market-v3"
    assert MARKET_FEATURES[-2:] == ("binance_stale", "poly_stale") and N_OBS == N_MARKET_FEATURES + 3


def test_vol_5m_minimum_fits_the_tick() -> None:
    """A 5-minute std from one sample a minute (5 samples) is a real statistic; at 0.5 s ticks 10 samples is not."""
    x = row(up_mid_std_5m=0.01, up_mid_n_5m=5)
    assert abs(market_features(x, np.array([0]), tick_s=60.0)[0, MARKET_FEATURES.index("vol_5m")] - 0.2) < 1e-6
    assert market_features(x, np.array([0]), tick_s=0.5)[0, MARKET_FEATURES.index("vol_5m")] == 0.0
    x10 = row(up_mid_std_5m=0.01, up_mid_n_5m=15)  # 10 s ticks: 30 samples never fit in 5 minutes
    assert market_features(x10, np.array([0]), tick_s=10.0)[0, MARKET_FEATURES.index("vol_5m")] > 0.0


def test_tick_inferred_from_the_rows_when_not_given() -> None:
    x = np.repeat(row(up_mid_std_5m=0.01, up_mid_n_5m=5), 3, axis=0)
    f = market_features(x, np.array([0, 60_000, 120_000]))
    assert np.all(f[:, MARKET_FEATURES.index("vol_5m")] > 0)


def test_spread_pct_does_not_saturate_on_ordinary_spreads() -> None:
    i = MARKET_FEATURES.index("spread_pct")
    vals = []
    for bid, ask in ((0.49, 0.50), (0.48, 0.50), (0.15, 0.17), (0.05, 0.06), (0.02, 0.03), (0.01, 0.99)):
        vals.append(feat(row(up_bid_px_0=bid, up_ask_px_0=ask))["spread_pct"])
    assert all(0 < v < 0.9 for v in vals[:5]), vals  # v2 clipped (0.15, 0.17), (0.05, 0.06), (0.02, 0.03) at 1.0
    assert vals[0] < vals[1] < vals[2] < vals[3] < vals[4] <= vals[5] <= 1.0
    assert i >= 0


def test_stale_inputs_are_neutralised_and_flagged() -> None:
    from common.schema import STALE_BINANCE, STALE_POLY

    bn = dict(bn_buy_notional=9e5, bn_sell_notional=1e5, bn_close_0=101.0, bn_close_1m=100.0, bn_trades_10s=50)
    pm = dict(up_bid_px_0=0.48, up_ask_px_0=0.52, up_bid_sz_0=300, up_ask_sz_0=100)
    x = row(**bn, **pm, age_binance_ms=100, age_poly_ms=100)
    fresh = dict(zip(MARKET_FEATURES, market_features(x, np.array([0]), flags=np.array([0]))[0].tolist(), strict=True))
    assert fresh["trade_flow_imbalance"] > 0.5 and fresh["binance_stale"] == 0 and fresh["poly_stale"] == 0
    f_bn = market_features(x, np.array([0]), flags=np.array([STALE_BINANCE]))[0]
    d = dict(zip(MARKET_FEATURES, f_bn.tolist(), strict=True))
    assert d["binance_stale"] == 1.0 and d["trade_flow_imbalance"] == 0 and d["returns_1m"] == 0
    assert d["trade_intensity"] == 0 and d["ob_imbalance_l1"] == fresh["ob_imbalance_l1"]
    f_pm_row = market_features(x, np.array([0]), flags=np.array([STALE_POLY]))[0]
    f_pm = dict(zip(MARKET_FEATURES, f_pm_row.tolist(), strict=True))
    assert f_pm["poly_stale"] == 1.0 and f_pm["ob_imbalance_l1"] == 0 and f_pm["up_mid"] == 0
    assert f_pm["trade_flow_imbalance"] == fresh["trade_flow_imbalance"]
    # without flags, staleness comes from the ages the state carries (8 hours after the feed ended)
    x[0, RAW_INDEX["age_binance_ms"]] = 8 * 3600_000
    g = dict(zip(MARKET_FEATURES, market_features(x, np.array([0]))[0].tolist(), strict=True))
    assert g["binance_stale"] == 1.0 and g["trade_flow_imbalance"] == 0
