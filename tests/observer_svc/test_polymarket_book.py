"""Local Polymarket books: snapshots, price_change application, crossed/disagreeing tops."""

from __future__ import annotations

import math

import numpy as np
import orjson

from observer_svc.polymarket_book import TokenBook, apply_price_change
from observer_svc.polymarket_wire import Book, PriceChange, parse_frame

UP, DN, CID = "111", "222", "0xc1"


def snapshot(asset: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]], ts: int = 1000) -> Book:
    (b,) = parse_frame(
        orjson.dumps(
            {
                "event_type": "book",
                "asset_id": asset,
                "market": CID,
                "bids": [{"price": p, "size": s} for p, s in bids],
                "asks": [{"price": p, "size": s} for p, s in asks],
                "timestamp": str(ts),
                "hash": "0x1",
                "tick_size": "0.01",
            }
        )
    )
    assert isinstance(b, Book)
    return b


def change(ts: int, *entries: tuple[str, str, str, str, str | None, str | None]) -> PriceChange:
    pcs = []
    for asset, price, size, side, bb, ba in entries:
        e = {"asset_id": asset, "price": price, "size": size, "side": side, "hash": "h"}
        if bb is not None:
            e["best_bid"] = bb
        if ba is not None:
            e["best_ask"] = ba
        pcs.append(e)
    (pc,) = parse_frame(orjson.dumps({"event_type": "price_change", "market": CID, "timestamp": str(ts),
                                      "price_changes": pcs}))  # fmt: skip
    assert isinstance(pc, PriceChange)
    return pc


def test_snapshot_unordered_levels_best_first() -> None:
    b = TokenBook(UP)
    # captured books list bids ascending and asks descending
    b.apply_book(
        snapshot(UP, [(".01", "100"), (".45", "10"), (".48", "30")], [(".99", "5"), (".60", "1"), (".52", "25")])
    )
    assert b.best_bid == 0.48 and b.best_ask == 0.52 and b.mid() == 0.5
    bp, bs, ap, as_ = b.top(5)
    np.testing.assert_array_equal(bp[:3], [0.48, 0.45, 0.01])
    np.testing.assert_array_equal(bs[:3], [30, 10, 100])
    np.testing.assert_array_equal(ap[:3], [0.52, 0.60, 0.99])
    assert np.isnan(bp[3:]).all() and np.isnan(as_[3:]).all()
    assert b.tick_size == 0.01 and b.timestamp == 1000
    # a new snapshot replaces everything
    b.apply_book(snapshot(UP, [(".30", "1")], [], ts=2000))
    assert b.best_bid == 0.30 and b.best_ask is None and math.isnan(b.mid())
    assert list(b.bids) == [0.30] and not b.asks


def test_price_change_sets_aggregate_and_removes_levels_both_tokens() -> None:
    books = {UP: TokenBook(UP), DN: TokenBook(DN)}
    books[UP].apply_book(snapshot(UP, [(".48", "30"), (".47", "10")], [(".52", "25")]))
    books[DN].apply_book(snapshot(DN, [(".48", "25")], [(".52", "30"), (".53", "5")]))
    pc = change(
        1100,
        (UP, "0.48", "12", "BUY", "0.48", "0.52"),  # new aggregate, not a delta
        (UP, "0.49", "7", "BUY", "0.49", "0.52"),  # new best bid
        (DN, "0.52", "0", "SELL", "0.48", "0.53"),  # best ask removed
        (DN, "0.50", "3", "SELL", "0.48", "0.50"),  # new best ask
    )
    assert apply_price_change(pc, books) == []
    up, dn = books[UP], books[DN]
    assert up.bids == {0.48: 12.0, 0.47: 10.0, 0.49: 7.0} and up.best_bid == 0.49
    assert dn.asks == {0.53: 5.0, 0.50: 3.0} and dn.best_ask == 0.50
    assert up.timestamp == 1100 and dn.timestamp == 1100
    assert not up.needs_resync and not dn.needs_resync and up.crossed == 0
    # removing the best bid falls back to the next level
    apply_price_change(change(1200, (UP, "0.49", "0", "BUY", "0.48", "0.52")), books)
    assert up.best_bid == 0.48 and up.top(2)[0].tolist() == [0.48, 0.47]
    # removing a level that does not exist is harmless; unknown tokens are skipped
    apply_price_change(change(1300, (UP, "0.11", "0", "BUY", "0.48", "0.52"), ("999", "0.5", "1", "BUY", None, None)),
                       books)  # fmt: skip
    assert up.bids == {0.48: 12.0, 0.47: 10.0} and not up.needs_resync


def test_disagreeing_top_trusts_the_venue_and_needs_resync() -> None:
    books = {UP: TokenBook(UP)}
    b = books[UP]
    b.apply_book(snapshot(UP, [(".48", "30"), (".47", "10")], [(".52", "25"), (".55", "4")]))
    # we missed the removal of 0.48 and of the ask 0.52: the venue says best bid 0.47, best ask 0.55
    repaired = apply_price_change(change(1100, (UP, "0.40", "5", "BUY", "0.47", "0.55")), books)
    assert repaired == [b] and b.needs_resync and b.disagreed == 1
    assert b.best_bid == 0.47 and b.best_ask == 0.55
    assert 0.48 not in b.bids and 0.52 not in b.asks and b.bids[0.40] == 5.0
    # a venue best we do not hold is inserted with an unknown size
    apply_price_change(change(1200, (UP, "0.40", "6", "BUY", "0.49", "0.55")), books)
    assert b.best_bid == 0.49 and math.isnan(b.bids[0.49]) and b.disagreed == 2
    # the next snapshot clears the resync mark
    b.apply_book(snapshot(UP, [(".49", "3")], [(".55", "4")], ts=1300))
    assert not b.needs_resync and b.bids == {0.49: 3.0}


def test_crossed_book_is_counted() -> None:
    books = {UP: TokenBook(UP)}
    b = books[UP]
    b.apply_book(snapshot(UP, [(".48", "30")], [(".52", "25")]))
    # the venue's own top confirms the cross away: bid 0.53 arrived, the ask side moved to 0.54
    repaired = apply_price_change(change(1100, (UP, "0.53", "5", "BUY", "0.53", "0.54")), books)
    assert repaired == [b] and b.crossed == 1 and b.needs_resync
    assert b.best_bid == 0.53 and b.best_ask == 0.54 and 0.52 not in b.asks
    assert b.best_bid < b.best_ask
    # old-shape change (no venue top): a cross is only detected and marked
    b.apply_book(snapshot(UP, [(".48", "30")], [(".52", "25")]))
    old_shape = {"event_type": "price_change", "asset_id": UP, "market": CID, "hash": "x", "timestamp": "1200",
                 "changes": [{"price": "0.60", "side": "BUY", "size": "1"}]}  # fmt: skip
    (pc,) = parse_frame(orjson.dumps(old_shape))
    assert isinstance(pc, PriceChange)
    assert apply_price_change(pc, books) == [b]
    assert b.crossed == 2 and b.needs_resync and b.disagreed == 1  # disagreement count unchanged
    assert b.best_bid == 0.60 and b.best_ask == 0.52  # left as is until a snapshot


def test_empty_side_sentinels() -> None:
    books = {UP: TokenBook(UP)}
    b = books[UP]
    b.apply_book(snapshot(UP, [(".48", "30")], [(".52", "25")]))
    # the last ask is taken: venue best_ask "0" / "1" both mean "no asks"
    apply_price_change(change(1100, (UP, "0.52", "0", "SELL", "0.48", "0")), books)
    assert b.best_ask is None and not b.needs_resync
    apply_price_change(change(1200, (UP, "0.50", "2", "BUY", "0.50", "1")), books)
    assert b.best_bid == 0.50 and b.best_ask is None and not b.needs_resync


def test_fill_top_layout() -> None:
    b = TokenBook(UP)
    b.apply_book(snapshot(UP, [(".48", "30"), (".47", "10")], [(".52", "25")]))
    out = np.full(20, -1.0)
    b.fill_top(out, 5)
    assert out[0:2].tolist() == [0.48, 0.47] and out[5:7].tolist() == [30.0, 10.0]
    assert out[10] == 0.52 and out[15] == 25.0
    assert np.isnan(out[[2, 3, 4, 7, 11, 16, 19]]).all()
