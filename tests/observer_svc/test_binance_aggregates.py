"""Per-symbol aggregates: decay, bars, rv, volumes, buckets, large trades, fill_raw contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common.schema import BINANCE_BOOK_INVALID, N_RAW, RAW_FIELDS, RAW_INDEX
from observer_svc.binance_aggregates import FILLED_FIELDS, SymbolAggregates
from observer_svc.binance_wire import AggTrade, BookTicker, DepthSnapshot, DepthUpdate, Kline, parse_frame
from tests.observer_svc.test_binance_wire import hft_frames

T0 = 1_723_161_600_000  # a minute boundary (ms)
MIN = 60_000


def raw(agg: SymbolAggregates, tick_ms: int) -> dict[str, float]:
    x = np.full(N_RAW, np.nan)
    agg.fill_raw(x, tick_ms)
    return {k: float(x[RAW_INDEX[k]]) for k in FILLED_FIELDS}


def trade(T: int, p: float = 100.0, q: float = 1.0, sell: bool = False, E: int | None = None) -> AggTrade:
    return AggTrade("BTCUSDT", p, q, sell, T, E if E is not None else T + 1)


def krow(m: int, close: float, vol: float) -> list[object]:
    t = T0 + m * MIN
    return [
        t,
        str(close),
        str(close * 1.001),
        str(close * 0.999),
        str(close),
        str(vol),
        t + MIN - 1,
        "0",
        1,
        "0",
        "0",
        "0",
    ]


def test_fill_raw_writes_exactly_the_binance_fields() -> None:
    # bn_open_px depends on the market's window: the state builder writes it (from open_at)
    assert set(FILLED_FIELDS) == {k for k in RAW_FIELDS if k.startswith("bn_")} - {"bn_open_px"} | {"age_binance_ms"}
    agg = SymbolAggregates("btcusdt")
    agg.on_trade(trade(T0 + 500))
    x = np.full(N_RAW, 12345.0)
    agg.fill_raw(x, T0 + 1000)
    for k, i in RAW_INDEX.items():
        assert (x[i] != 12345.0) == (k in FILLED_FIELDS), k


def test_nothing_seen_is_nan() -> None:
    r = raw(SymbolAggregates("BTCUSDT"), T0)
    assert all(math.isnan(v) for v in r.values())


def test_flow_decay_is_continuous_and_uses_event_time() -> None:
    agg = SymbolAggregates("BTCUSDT", flow_half_life_s=60.0)
    agg.on_trade(trade(T0, p=100.0, q=10.0))  # buy 1000
    agg.on_trade(trade(T0, p=100.0, q=2.0, sell=True))  # buyer is maker => sell 200
    for dt in (0, 1, 499, 500, 17_250, 60_000, 90_001):
        r = raw(agg, T0 + dt)
        f = 2.0 ** (-dt / 60_000)
        assert r["bn_buy_notional"] == pytest.approx(1000 * f, rel=1e-12)
        assert r["bn_sell_notional"] == pytest.approx(200 * f, rel=1e-12)
    agg.on_trade(trade(T0 + 30_000, q=1.0))
    assert raw(agg, T0 + 30_000)["bn_buy_notional"] == pytest.approx(1000 * 2**-0.5 + 100, rel=1e-12)
    # a late trade (older than the newest) is added with its own decay
    agg.on_trade(trade(T0 + 15_000, q=1.0, sell=True))
    assert raw(agg, T0 + 30_000)["bn_sell_notional"] == pytest.approx((200 + 100 * 2**0.25) * 2**-0.5, rel=1e-12)
    assert raw(agg, T0 + 31_000)["age_binance_ms"] == 31_000 - (30_000 + 1)  # E of the newest event


def test_net_and_count_buckets() -> None:
    agg = SymbolAggregates("BTCUSDT")
    for s in range(25):  # one buy of 100 USD per second, plus a sell of 50 every 5 s
        agg.on_trade(trade(T0 + s * 1000 + 100))
        if s % 5 == 0:
            agg.on_trade(trade(T0 + s * 1000 + 200, q=0.5, sell=True))
    r = raw(agg, T0 + 25_000)  # last 10 s = seconds 15..24, previous = 5..14
    assert r["bn_net_10s"] == pytest.approx(10 * 100 - 2 * 50)
    assert r["bn_net_prev_10s"] == pytest.approx(10 * 100 - 2 * 50)
    assert r["bn_trades_10s"] == 12
    r = raw(agg, T0 + 60_000)
    assert r["bn_net_10s"] == 0 and r["bn_net_prev_10s"] == 0 and r["bn_trades_10s"] == 0


def test_large_trade_age() -> None:
    agg = SymbolAggregates("BTCUSDT", large_trade_multiple=10.0)
    for i in range(30):
        agg.on_trade(trade(T0 + i * 100, q=1.0))  # 100 USD each
    agg.on_trade(trade(T0 + 3_000, q=5.0))  # 500 < 10 x median: not large
    assert math.isnan(raw(agg, T0 + 4_000)["bn_large_age_s"])
    agg.on_trade(trade(T0 + 5_000, q=20.0))  # 2000 > 1000
    assert raw(agg, T0 + 7_500)["bn_large_age_s"] == pytest.approx(2.5)


def test_close_lags_rv_and_volumes_from_backfill() -> None:
    rng = np.random.default_rng(7)
    n = 180
    closes = 100 * np.cumprod(1 + rng.normal(0, 0.001, n))
    agg = SymbolAggregates("BTCUSDT")
    assert agg.backfill_klines([krow(m, closes[m], 10.0 + m) for m in range(n)]) == n
    cur = n - 1
    r = raw(agg, T0 + cur * MIN + 30_000)
    assert r["bn_close_0"] == pytest.approx(closes[-1])
    assert r["bn_close_1m"] == pytest.approx(closes[-2])
    assert r["bn_close_5m"] == pytest.approx(closes[-6])
    assert r["bn_close_10m"] == pytest.approx(closes[-11])
    assert r["bn_close_60m"] == pytest.approx(closes[-61])
    c = np.array([float(str(v)) for v in closes[-61:]])
    assert r["bn_rv_1h"] == pytest.approx(np.std(c[1:] / c[:-1] - 1) * math.sqrt(60), rel=1e-9)
    assert r["bn_vol_1h"] == pytest.approx(sum(10.0 + m for m in range(n - 60, n)))
    assert r["bn_vol_24h_per_h"] == pytest.approx(sum(10.0 + m for m in range(n)) / (n / 60))
    assert r["bn_last_px"] == pytest.approx(closes[-1])
    # two minutes later without trades: flat bars of zero volume, lags shift
    r2 = raw(agg, T0 + (cur + 2) * MIN + 1)
    assert r2["bn_close_0"] == r2["bn_close_1m"] == pytest.approx(closes[-1])
    assert r2["bn_close_5m"] == pytest.approx(closes[-4])
    assert r2["bn_vol_1h"] == pytest.approx(sum(10.0 + m for m in range(n - 58, n)))


def test_vol_24h_is_a_mean_over_24h_not_24_times_1h() -> None:
    agg = SymbolAggregates("BTCUSDT")
    rows = [krow(m, 100.0, 10.0 if m < 1380 else 100.0) for m in range(1440)]  # quiet 23 h, busy last hour
    agg.backfill_klines(rows)
    r = raw(agg, T0 + 1439 * MIN)
    assert r["bn_vol_1h"] == pytest.approx(6000.0)
    assert r["bn_vol_24h_per_h"] == pytest.approx((1380 * 10 + 60 * 100) / 24)
    assert r["bn_vol_1h"] / r["bn_vol_24h_per_h"] == pytest.approx(6000 / 825)
    assert r["bn_rv_1h"] == 0.0
    # less than an hour of history: unknown, never a partial figure
    short = SymbolAggregates("BTCUSDT")
    short.backfill_klines(rows[:30])
    r = raw(short, T0 + 29 * MIN)
    assert math.isnan(r["bn_vol_1h"]) and math.isnan(r["bn_vol_24h_per_h"]) and math.isnan(r["bn_rv_1h"])
    assert r["bn_close_0"] == 100.0 and math.isnan(r["bn_close_60m"])


def test_bars_from_trades_and_kline_override() -> None:
    agg = SymbolAggregates("BTCUSDT")
    agg.on_trade(trade(T0 + 1_000, p=100.0, q=1.0))
    agg.on_trade(trade(T0 + 2_000, p=101.0, q=2.0))
    agg.on_trade(trade(T0 + MIN + 500, p=102.0, q=1.0))  # next minute
    r = raw(agg, T0 + MIN + 1_000)
    assert r["bn_close_0"] == 102.0 and r["bn_close_1m"] == 101.0
    # kline for the current minute, newer than its last trade: overrides close and volume
    agg.on_kline(Kline("BTCUSDT", T0 + MIN, T0 + 2 * MIN - 1, 102.0, 103.5, 101.5, 103.0, 7.0, False, T0 + MIN + 2_000))
    assert raw(agg, T0 + MIN + 2_500)["bn_close_0"] == 103.0 and agg.cur_v == 7.0
    agg.on_trade(trade(T0 + MIN + 3_000, p=103.2, q=0.5))
    assert agg.cur_v == 7.5 and agg.cur_c == 103.2
    # an older kline does not take the close back
    agg.on_kline(Kline("BTCUSDT", T0 + MIN, T0 + 2 * MIN - 1, 102.0, 103.5, 101.5, 103.0, 7.2, False, T0 + MIN + 2_900))
    assert agg.cur_c == 103.2 and agg.cur_v == 7.5
    # the final kline of the previous minute, arriving late, fixes that bar
    agg.on_kline(Kline("BTCUSDT", T0, T0 + MIN - 1, 100.0, 101.0, 99.0, 100.5, 9.0, True, T0 + MIN + 50))
    assert raw(agg, T0 + MIN + 4_000)["bn_close_1m"] == 100.5
    assert raw(agg, T0 + MIN + 4_000)["bn_last_px"] == 103.2


def test_best_bid_ask_bookticker_vs_newer_depth_book() -> None:
    agg = SymbolAggregates("BTCUSDT", futures=False, with_book=True)
    assert agg.flags(T0) == BINANCE_BOOK_INVALID
    agg.on_book_ticker(BookTicker("BTCUSDT", 100, 10.0, 1.0, 11.0, 2.0, None, None))
    assert raw(agg, T0)["bn_bid"] == 10.0
    agg.apply_snapshot(DepthSnapshot(100, [(10.0, 1.0)], [(11.0, 2.0)]))
    assert agg.flags(T0) == 0
    agg.on_depth(DepthUpdate("BTCUSDT", 101, 103, None, [(10.5, 3.0)], [], T0))
    r = raw(agg, T0)
    assert (r["bn_bid"], r["bn_bid_sz"], r["bn_ask"], r["bn_ask_sz"]) == (10.5, 3.0, 11.0, 2.0)
    agg.on_book_ticker(BookTicker("BTCUSDT", 104, 10.6, 1.0, 10.9, 1.0, None, None))
    assert raw(agg, T0)["bn_ask"] == 10.9
    assert agg.on_depth(DepthUpdate("BTCUSDT", 110, 111, None, [], [], T0 + 100))  # gap -> needs snapshot
    assert raw(agg, T0)["bn_bid"] == 10.6 and agg.flags(T0) == BINANCE_BOOK_INVALID


def test_replay_of_recorded_frames_is_deterministic(recorded_data: Path) -> None:
    frames = hft_frames(recorded_data, "btcusdt", "20240808")

    def replay() -> bytes:
        agg = SymbolAggregates("BTCUSDT", futures=False, with_book=True)
        out = []
        next_tick = None
        for f in frames:
            agg.on_event(parse_frame(f))
            le = agg.last_event_ms
            if le is not None:
                next_tick = next_tick or (le // 500 + 1) * 500
                while le > next_tick:
                    x = np.full(N_RAW, np.nan)
                    agg.fill_raw(x, next_tick)
                    out.append(x.tobytes())
                    next_tick += 500
        assert agg.book is not None and agg.book.valid
        return b"".join(out)

    a, b = replay(), replay()
    assert len(a) > 100 * N_RAW * 8 and a == b  # 60 s of frames, 500 ms ticks


def test_open_at_is_the_open_of_the_windows_first_bar() -> None:
    n = 90
    agg = SymbolAggregates("BTCUSDT")
    agg.backfill_klines([krow(m, 100.0 + m, 1.0) for m in range(n)])  # bar m opens at 100 + m
    assert agg.open_at(T0 + 30 * MIN) == pytest.approx(130.0)
    assert agg.open_at(T0 + 30 * MIN + 59_999) == pytest.approx(130.0)  # any time in that minute
    assert agg.open_at(T0 + (n - 1) * MIN) == pytest.approx(100.0 + n - 1)  # the current bar
    assert math.isnan(agg.open_at(T0 + n * MIN))  # a window that opens after the newest bar
    assert math.isnan(agg.open_at(T0 - 5 * MIN))  # a bar never seen
    agg.on_trade(trade(T0 + n * MIN + 10, p=200.0))  # a new minute starts with a trade at 200
    assert agg.open_at(T0 + n * MIN) == pytest.approx(200.0)
    assert agg.open_at(T0 + (n - 1) * MIN) == pytest.approx(100.0 + n - 1)  # now in the ring
