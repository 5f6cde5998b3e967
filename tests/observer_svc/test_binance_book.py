"""Local depth book: agreement with the recorded bookTicker, and the update-id rules."""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import pytest

from observer_svc.binance_book import DepthBook
from observer_svc.binance_wire import BookTicker, DepthSnapshot, DepthUpdate, parse_frame
from tests.observer_svc.test_binance_wire import hft_frames


@pytest.mark.parametrize("sym", ["btcusdt", "ethusdt"])
def test_book_rebuilt_from_depth_agrees_with_book_ticker(recorded_data: Path, sym: str) -> None:
    """Top of the book after each depth event vs every bookTicker describing the same update id."""
    book = DepthBook(futures=False)
    tops: dict[int, tuple[int, tuple[float, float, float, float]]] = {}  # depth u -> (U, top after it)
    tickers: list[BookTicker] = []
    n_depth = 0
    for raw in hft_frames(recorded_data, sym, "20240808"):
        ev = parse_frame(raw)
        if type(ev) is DepthSnapshot:
            assert book.apply_snapshot(ev)
        elif type(ev) is DepthUpdate:
            n_depth += 1
            if book.on_update(ev) and book.last_update_id == ev.final_id:
                tops[ev.final_id] = (ev.first_id, book.top())
        elif type(ev) is BookTicker:
            tickers.append(ev)
    assert book.valid and book.resyncs == 0
    assert len(tops) > n_depth - 15  # synced within the first second, then every event applied
    us = sorted(tops)
    exact = exact_px = exact_all = 0
    in_range = in_range_px = 0
    for bt in tickers:
        hit = tops.get(bt.update_id)
        if hit is not None:  # the same moment: bookTicker u == depth event's final u
            top = hit[1]
            exact += 1
            exact_px += top[0] == bt.bid and top[2] == bt.ask
            exact_all += top == (bt.bid, bt.bid_qty, bt.ask, bt.ask_qty)
        i = bisect.bisect_left(us, bt.update_id)
        if i < len(us) and tops[us[i]][0] <= bt.update_id:  # within a depth event's U..u
            in_range += 1
            top = tops[us[i]][1]
            in_range_px += top[0] == bt.bid and top[2] == bt.ask
    rate, rate_all = exact_px / exact, exact_all / exact
    print(
        f"\n{sym}: bookTicker u == depth u: {exact} moments, best bid/ask agree {rate:.4%}, "
        f"with sizes {rate_all:.4%}; u within U..u: {in_range} moments, agree {in_range_px / in_range:.2%}"
    )
    assert exact > 70  # 60 s (BTC) / 45 s (ETH) of the capture
    assert rate >= 0.99 and rate_all >= 0.99


def upd(U: int, u: int, bids=(), asks=(), pu: int | None = None, E: int = 1) -> DepthUpdate:
    return DepthUpdate("X", U, u, pu, list(bids), list(asks), E)


SNAP = DepthSnapshot(100, [(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0), (12.0, 3.0)])


def test_spot_rules_buffer_drop_straddle_chain_gap() -> None:
    b = DepthBook(futures=False)
    assert not b.on_update(upd(90, 95, [(10.0, 5.0)]))  # buffered
    assert not b.on_update(upd(96, 103, [(9.5, 1.0)], [(11.0, 0.0)]))  # straddles 101
    assert not b.on_update(upd(104, 110, asks=[(13.0, 0.0)]))  # unknown level removal is fine
    assert math.isnan(b.best_bid)
    assert b.apply_snapshot(SNAP)
    assert b.valid and b.last_update_id == 110
    assert b.bids[10.0] == 1.0  # the 90..95 event (u <= 100) was dropped
    assert b.top() == (10.0, 1.0, 12.0, 3.0)
    assert b.on_update(upd(111, 111, [(10.5, 2.0)]))
    assert b.best_bid == 10.5 and b.best_bid_qty == 2.0
    assert b.on_update(upd(112, 115, [(10.5, 0.0)]))
    assert b.best_bid == 10.0  # best removed -> recomputed
    # gap: 117 != 116
    assert not b.on_update(upd(117, 120))
    assert not b.valid and b.needs_snapshot and b.resyncs == 1
    assert math.isnan(b.best_bid)


def test_snapshot_older_than_buffer_is_refused() -> None:
    b = DepthBook(futures=False)
    b.on_update(upd(200, 210))
    assert not b.apply_snapshot(SNAP)  # 101 < 200: hole between snapshot and buffer
    assert not b.valid and b.needs_snapshot and b.stale_snapshots == 1
    assert b.apply_snapshot(DepthSnapshot(205, SNAP.bids, SNAP.asks))
    assert b.valid and b.last_update_id == 210


def test_snapshot_before_any_event_requires_straddle() -> None:
    b = DepthBook(futures=False)
    assert b.apply_snapshot(SNAP) and b.valid
    assert b.on_update(upd(90, 100))  # old: ignored
    assert b.on_update(upd(95, 104, [(10.2, 1.0)]))  # straddles 101
    assert b.best_bid == 10.2
    b2 = DepthBook(futures=False)
    b2.apply_snapshot(SNAP)
    assert not b2.on_update(upd(103, 104))  # 101, 102 missing
    assert b2.needs_snapshot


def test_futures_pu_chain() -> None:
    b = DepthBook(futures=True)
    b.on_update(upd(95, 102, [(10.1, 1.0)], pu=94))
    b.on_update(upd(107, 109, [(10.2, 1.0)], pu=102))  # futures ids are not contiguous: pu links them
    assert b.apply_snapshot(SNAP)
    assert b.best_bid == 10.2 and b.last_update_id == 109
    assert b.on_update(upd(115, 118, pu=109))
    assert not b.on_update(upd(125, 130, pu=119))  # pu != previous u
    assert b.resyncs == 1 and not b.valid


def test_reconnect_invalidate_and_old_snapshot_ignored() -> None:
    b = DepthBook(futures=False)
    b.apply_snapshot(SNAP)
    b.on_update(upd(101, 105))
    assert b.apply_snapshot(SNAP) and b.last_update_id == 105  # an older snapshot does not rewind
    b.invalidate()
    assert not b.valid and b.needs_snapshot and b.resyncs == 0


def test_prune_keeps_levels_near_touch() -> None:
    b = DepthBook(futures=False, max_levels=10)
    b.apply_snapshot(DepthSnapshot(1, [(100.0 - i, 1.0) for i in range(8)], [(101.0, 1.0)]))
    b.on_update(upd(2, 2, [(50.0 - i, 1.0) for i in range(5)]))
    assert len(b.bids) == 5 and b.best_bid == 100.0


def test_futures_capture_pu_chain_has_no_gap(recorded_data: Path) -> None:
    """The recorded USD-M depth events chain by pu == previous u, per symbol (the rule the book enforces)."""
    from tests.observer_svc.test_binance_wire import cryptofeed_frames

    books: dict[str, DepthBook] = {}
    applied = 0
    for raw in cryptofeed_frames(recorded_data, "BINANCE_FUTURES.ws.1.0"):
        ev = parse_frame(raw)
        if type(ev) is not DepthUpdate:
            continue
        b = books.get(ev.symbol)
        if b is None:  # synthetic snapshot at the first event's final id
            b = books[ev.symbol] = DepthBook(futures=True)
            assert b.apply_snapshot(DepthSnapshot(ev.final_id, [], []))
            continue
        assert b.on_update(ev)
        applied += 1
    assert len(books) == 4 and applied == 231
    assert all(b.valid and b.resyncs == 0 for b in books.values())
