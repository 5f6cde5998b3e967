"""Per-market Polymarket state: raw fields, window switch at the boundary, settlement, mid ring."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from common.markets import parse_market
from common.schema import N_RAW, NO_PM_MARKET, PM_RESOLVED, POLY_BOOK_EMPTY, RAW_FIELDS, RAW_INDEX, PolymarketWindow
from observer_svc.polymarket_state import PolymarketMarketState
from observer_svc.polymarket_wire import parse_frame

T0 = 1_767_000_000_000 - 1_767_000_000_000 % 300_000  # a 5-minute boundary (ms)
W1 = PolymarketWindow("btc-updown-5m-a", "0xc1", "u1", "d1", T0, T0 + 300_000)
W2 = PolymarketWindow("btc-updown-5m-b", "0xc2", "u2", "d2", T0 + 300_000, T0 + 600_000)
PM_FIELDS = [n for n in RAW_FIELDS if n.startswith(("up_", "dn_", "pm_")) or n in ("age_poly_ms",)]  # up_mid_* included


def ev(d: dict) -> object:
    (e,) = parse_frame(orjson.dumps(d))
    return e


def book(asset: str, ts: int, bid: str, ask: str, cid: str = "0xc1") -> object:
    return ev({"event_type": "book", "asset_id": asset, "market": cid, "timestamp": str(ts), "hash": "h",
               "bids": [{"price": bid, "size": "10"}], "asks": [{"price": ask, "size": "20"}]})  # fmt: skip


def resolved(cid: str, winner: str, ts: int) -> object:
    return ev({"event_type": "market_resolved", "market": cid, "assets_ids": [], "winning_asset_id": winner,
               "winning_outcome": "", "timestamp": str(ts)})  # fmt: skip


def row(st: PolymarketMarketState, t: int) -> np.ndarray:
    x = np.full(N_RAW, 7.0)
    st.sample_tick(t)
    st.fill_raw(x, t)
    return x


def g(x: np.ndarray, name: str) -> float:
    return float(x[RAW_INDEX[name]])


def test_fill_raw_writes_only_polymarket_fields_nan_when_unknown() -> None:
    st = PolymarketMarketState(parse_market("BTC-5M"))
    x = row(st, T0 + 1000)
    others = [i for n, i in RAW_INDEX.items() if n not in PM_FIELDS]
    assert (x[others] == 7.0).all()  # untouched
    pm = [RAW_INDEX[n] for n in PM_FIELDS if n != "up_mid_n_5m"]
    assert np.isnan(x[pm]).all() and g(x, "up_mid_n_5m") == 0.0
    assert st.flags(T0 + 1000) == NO_PM_MARKET and st.window is None


def test_books_trades_and_flags() -> None:
    st = PolymarketMarketState(parse_market("BTC-5M"))
    st.add_window(W1)
    assert st.flags(T0 + 1) == POLY_BOOK_EMPTY
    st.apply(book("u1", T0 + 500, ".40", ".44"))
    st.apply(book("d1", T0 + 600, ".56", ".60"))
    st.apply(ev({"event_type": "last_trade_price", "asset_id": "u1", "market": "0xc1", "price": "0.43",
                 "size": "5", "side": "BUY", "timestamp": str(T0 + 700)}))  # fmt: skip
    st.apply(book("zz", T0 + 900, ".1", ".2"))  # not ours: ignored
    x = row(st, T0 + 1000)
    assert g(x, "up_bid_px_0") == 0.40 and g(x, "up_ask_px_0") == 0.44 and g(x, "up_ask_sz_0") == 20.0
    assert math.isnan(g(x, "up_bid_px_1"))
    assert g(x, "dn_bid_px_0") == 0.56 and g(x, "dn_ask_sz_0") == 20.0
    assert g(x, "up_last_trade_px") == 0.43 and math.isnan(g(x, "dn_last_trade_px"))
    assert g(x, "pm_start_s") == T0 / 1000 and g(x, "pm_end_s") == T0 / 1000 + 300
    assert math.isnan(g(x, "pm_settle_up")) and math.isnan(g(x, "pm_prev_end_s"))
    assert g(x, "age_poly_ms") == 300.0  # tick - newest event time (event time only)
    assert g(x, "up_mid_n_5m") == 1.0 and g(x, "up_mid_std_5m") == 0.0
    assert st.flags(T0 + 1000) == 0


def test_rollover_exactly_at_end_and_late_resolution() -> None:
    st = PolymarketMarketState(parse_market("BTC-5M"))
    st.add_window(W1)
    st.apply(book("u1", T0 + 100, ".40", ".44"))
    st.add_window(W2)  # discovered ahead; its tokens are watched too
    assert set(st.tokens()) == {"u1", "d1", "u2", "d2"}
    st.apply(book("u2", T0 + 200_000, ".50", ".52", cid="0xc2"))
    last_old = row(st, T0 + 299_500)
    assert st.window == W1 and g(last_old, "up_bid_px_0") == 0.40
    first_new = row(st, T0 + 300_000)
    assert st.window == W2 and st.window_at(T0 + 299_999) == W1
    assert g(first_new, "up_bid_px_0") == 0.50 and g(first_new, "pm_start_s") == W2.start_ms / 1000
    assert g(first_new, "pm_prev_end_s") == W1.end_ms / 1000 and math.isnan(g(first_new, "pm_prev_settle_up"))
    assert g(first_new, "up_mid_n_5m") == 1.0  # the ring restarted with the new window
    # the old window resolves later: Down won
    st.apply(resolved("0xc1", "d1", T0 + 330_000))
    x = row(st, T0 + 330_500)
    assert g(x, "pm_prev_settle_up") == 0.0 and math.isnan(g(x, "pm_settle_up"))
    assert set(st.tokens()) == {"u2", "d2"}  # old window retired once resolved
    # the new one resolves: Up won
    st.apply(resolved("0xc2", "u2", T0 + 600_100))
    assert st.flags(T0 + 599_500) & PM_RESOLVED
    x = row(st, T0 + 600_500)
    assert st.window is None and st.flags(T0 + 600_500) == NO_PM_MARKET
    assert g(x, "pm_prev_end_s") == W2.end_ms / 1000 and g(x, "pm_prev_settle_up") == 1.0


def test_fill_is_a_function_of_tick_time_not_call_order() -> None:
    st = PolymarketMarketState(parse_market("BTC-5M"))
    st.add_window(W1)
    st.add_window(W2)
    st.advance(T0 + 301_000)  # the client's clock ran ahead of the tick loop
    x = np.full(N_RAW, np.nan)
    st.fill_raw(x, T0 + 299_500)
    assert g(x, "pm_end_s") == W1.end_ms / 1000


def test_mid_std_over_300s_ring() -> None:
    st = PolymarketMarketState(parse_market("BTC-5M"))
    st.add_window(PolymarketWindow("s", "0xc", "u", "d", T0, T0 + 3_600_000))
    mids = []
    for k in range(800):  # 400 s of 500 ms ticks
        t = T0 + 500 * k
        bid = 0.40 + 0.01 * (k % 7)
        st.apply(book("u", t - 1, f"{bid:.2f}", f"{bid + 0.02:.2f}", cid="0xc"))
        mids.append(bid + 0.01)
        x = row(st, t)
        st.sample_tick(t)  # a second call at the same tick adds nothing
    assert g(x, "up_mid_n_5m") == 600.0
    assert g(x, "up_mid_std_5m") == pytest.approx(np.std(mids[-600:]), rel=1e-12)
    assert g(x, "age_poly_ms") == 1.0


def test_fixed_market_window_always_current() -> None:
    st = PolymarketMarketState(parse_market("TRUMP=slug:presidential-election-winner-2024@BTCUSDT"))
    w = PolymarketWindow("presidential-election-winner-2024", "0xf", "yes", "no", 0, 1_730_800_000_000)
    st.add_window(w)
    st.apply(resolved("0xf", "yes", 1_731_000_000_000))
    x = row(st, 1_740_000_000_000)
    assert st.window == w and g(x, "pm_settle_up") == 1.0 and math.isnan(g(x, "pm_start_s"))
    assert math.isnan(g(x, "pm_prev_end_s"))
    assert st.flags(1_740_000_000_000) == POLY_BOOK_EMPTY | PM_RESOLVED
