"""The synthetic generator behaves like the observer's fields per tick (benchmarks.scale_real compares it with the
recorded replay): cent-grid Binance prices, ages that grow by the tick and reset, decayed notionals, 1-second
bucket flows, minute-bar closes, Polymarket sizes that hold between changes; deterministic per seed."""

from __future__ import annotations

import numpy as np

from archiver_svc import colcodec
from archiver_svc.synth import HALF_LIFE_S, synth_raw
from common.schema import RAW_INDEX

T0 = 1_763_856_000_000  # a day boundary
N = 6000
TICKS = T0 + 500 * np.arange(N, dtype=np.int64)


def _col(raw: np.ndarray, name: str) -> np.ndarray:
    return raw[:, RAW_INDEX[name]]


def test_deterministic_per_seed_and_seeds_differ() -> None:
    a, b, c = synth_raw(TICKS, 3), synth_raw(TICKS, 3), synth_raw(TICKS, 4)
    assert np.array_equal(a, b, equal_nan=True)
    assert not np.array_equal(a, c, equal_nan=True)


def test_binance_prices_on_the_cent_grid_and_closes_are_minute_bars() -> None:
    raw = synth_raw(TICKS, 1)
    for name in ("bn_bid", "bn_ask", "bn_last_px", "bn_close_0", "bn_close_1m", "bn_close_5m", "bn_close_60m"):
        assert colcodec.decimal_column(_col(raw, name), 2, 18) is not None, name  # exact cents, stored as DECIMAL
    assert np.allclose(_col(raw, "bn_ask") - _col(raw, "bn_bid"), 0.01)
    moved = np.mean(np.diff(_col(raw, "bn_bid")) != 0)
    assert 0.2 < moved < 0.5, moved  # the recorded best bid moves on about a third of the ticks
    new_minute = np.diff(TICKS // 60_000) != 0
    for name in ("bn_close_1m", "bn_close_5m"):
        changed = np.diff(_col(raw, name)) != 0
        assert changed.any() and not (changed & ~new_minute).any(), name


def test_ages_grow_by_the_tick_and_reset() -> None:
    raw = synth_raw(TICKS, 2)
    for name, scale in (("age_poly_ms", 1.0), ("bn_large_age_s", 1000.0)):
        age = np.round(_col(raw, name) * scale)
        assert (age >= 0).all(), name
        d = np.diff(age)
        grew, reset = d == 500, age[1:] < 500
        assert (grew | reset).all(), name  # either one tick older, or an event within the last tick
        assert grew.any() and reset.any(), name
    age = _col(raw, "age_binance_ms")  # the newest Binance frame: under 100 ms, often the same as a tick ago
    assert (age >= 0).all() and (age < 100).all() and 0.4 < np.mean(np.diff(age) != 0) < 0.8


def test_flows_are_decayed_and_bucketed_sums_of_trades() -> None:
    raw = synth_raw(TICKS, 5)
    f = 0.5 ** (0.5 / HALF_LIFE_S)
    for name in ("bn_buy_notional", "bn_sell_notional"):
        x = _col(raw, name)
        assert (x[1:] >= x[:-1] * f * (1 - 1e-12)).all(), name  # decays, or grows by the tick's trades
        assert np.corrcoef(x[:-1], x[1:])[0, 1] > 0.99, name
    cnt = _col(raw, "bn_trades_10s")
    assert np.array_equal(cnt, np.round(cnt)) and (cnt >= 0).all()
    net, prev = _col(raw, "bn_net_10s"), _col(raw, "bn_net_prev_10s")
    whole = np.flatnonzero(TICKS % 1000 == 0)
    whole = whole[whole >= 20]  # a tick ending a second: the previous 10 s are the buckets of 20 ticks back
    assert np.allclose(prev[whole], net[whole - 20], rtol=1e-9, atol=1e-6)
    assert np.mean(np.diff(prev) != 0) < 0.6  # the previous 10 s move once a second


def test_polymarket_sizes_hold_between_changes() -> None:
    raw = synth_raw(TICKS, 6)
    for name in ("up_bid_sz_0", "dn_ask_sz_3"):
        x = _col(raw, name)
        assert colcodec.decimal_column(x, 2, 9) is not None, name
        rate = np.mean(np.diff(x) != 0)
        assert 0.35 < rate < 0.6, (name, rate)  # the Borisz42 capture: about every other 0.5 s tick
        assert np.corrcoef(np.log(x[:-1]), np.log(x[1:]))[0, 1] > 0.9, name
