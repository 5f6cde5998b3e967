"""Polymarket market-channel parsing: real fixtures, documented shapes, malformed frames."""

from __future__ import annotations

import math

import orjson
import pytest

from observer_svc.polymarket_wire import (
    PONG,
    BestBidAsk,
    Book,
    LastTradePrice,
    MarketResolved,
    NewMarket,
    PriceChange,
    TickSizeChange,
    WireError,
    operation_message,
    parse_frame,
    parse_frame_partial,
    subscribe_message,
)

FIX = "polymarket_ws_message_fixtures__nautilus_trader"
CID = "0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1"
UP = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
DN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"


def test_real_fixtures_parse(recorded_data) -> None:
    d = recorded_data / FIX
    (bba,) = parse_frame((d / "ws_market_best_bid_ask_msg.json").read_bytes())
    assert isinstance(bba, BestBidAsk)
    assert (bba.best_bid, bba.best_ask, bba.timestamp) == (0.73, 0.77, 1766789469958)
    assert bba.asset_id.startswith("8535495606")

    (nm,) = parse_frame((d / "ws_market_new_market_msg.json").read_bytes())
    assert isinstance(nm, NewMarket)
    assert nm.slug == "nvda-above-240-on-january-30-2026" and nm.outcomes == ["Yes", "No"]
    assert len(nm.assets_ids) == 2 and nm.market.startswith("0x311d0c")

    (mr,) = parse_frame((d / "ws_market_resolved_msg.json").read_bytes())
    assert isinstance(mr, MarketResolved)
    assert mr.winning_outcome == "Yes" and mr.winning_asset_id == mr.assets_ids[0]
    assert mr.timestamp == 1766790415550

    # an RTDS message is not a market-channel event
    with pytest.raises(WireError) as e:
        parse_frame((d / "rtds_crypto_prices_update.json").read_bytes())
    assert e.value.reason == "unknown_event_type"


def _book(asset: str, ts: int = 1757908892351, **extra: object) -> dict:
    return {
        "event_type": "book",
        "asset_id": asset,
        "market": CID,
        "bids": [{"price": ".01", "size": "100"}, {"price": ".48", "size": "30"}],
        "asks": [{"price": ".99", "size": "5"}, {"price": ".52", "size": "25"}],
        "timestamp": str(ts),
        "hash": "0xabc",
        **extra,
    }


def test_array_frame_book_then_price_change_both_tokens() -> None:
    pc = {
        "event_type": "price_change",
        "market": CID,
        "timestamp": "1757908892400",
        "price_changes": [
            {"asset_id": UP, "price": "0.5", "size": "200", "side": "BUY", "hash": "h1", "best_bid": "0.5",
             "best_ask": "0.52"},
            {"asset_id": DN, "price": "0.5", "size": "0", "side": "SELL", "hash": "h2", "best_bid": "0.47",
             "best_ask": "0.53"},
        ],
    }  # fmt: skip
    frame = orjson.dumps([_book(UP, tick_size="0.01", last_trade_price="0.920"), pc])
    book, change = parse_frame(frame)
    assert isinstance(book, Book) and isinstance(change, PriceChange)
    assert book.bids == [(0.01, 100.0), (0.48, 30.0)]  # order as received
    assert book.asks[1] == (0.52, 25.0)
    assert book.tick_size == 0.01 and book.last_trade_price == 0.92
    assert change.timestamp == 1757908892400
    assert [(c.asset_id, c.side, c.size) for c in change.changes] == [(UP, "BUY", 200.0), (DN, "SELL", 0.0)]
    assert change.changes[1].best_ask == 0.53


def test_old_price_change_shape_and_other_events() -> None:
    old = {
        "event_type": "price_change",
        "asset_id": UP,
        "market": CID,
        "changes": [{"price": "0.4", "side": "SELL", "size": "10"}],
        "timestamp": "1736000000000",
        "hash": "0xh",
    }
    (pc,) = parse_frame(orjson.dumps(old).decode())
    assert isinstance(pc, PriceChange)
    c = pc.changes[0]
    assert (c.asset_id, c.price, c.size, c.side, c.hash, c.best_bid) == (UP, 0.4, 10.0, "SELL", "0xh", None)

    ltp = {"event_type": "last_trade_price", "asset_id": UP, "market": CID, "price": "0.456", "size": "219.217767",
           "fee_rate_bps": "0", "side": "BUY", "timestamp": "1750428146322", "transaction_hash": "0x1"}  # fmt: skip
    tsc = {"event_type": "tick_size_change", "asset_id": UP, "market": CID, "old_tick_size": "0.01",
           "new_tick_size": "0.001", "timestamp": "1750428146400"}  # fmt: skip
    a, b = parse_frame(orjson.dumps([ltp, tsc]))
    assert isinstance(a, LastTradePrice) and a.price == 0.456 and a.size == pytest.approx(219.217767)
    assert isinstance(b, TickSizeChange) and b.new_tick_size == 0.001 and b.timestamp == 1750428146400


def test_pong_and_empty_array() -> None:
    assert parse_frame("PONG") == [PONG]
    assert parse_frame(b"PONG") == [PONG]
    assert parse_frame(b"[]") == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"event_type":"book","asset_id":"1","bids":[{"price":"0.5"', "json"),
        (b'"hello"', "not_object"),
        (b"[1, 2]", "not_object"),
        (b'{"event_type":"orderbook_delta","asset_id":"1"}', "unknown_event_type"),
        (b'{"asset_id":"1"}', "unknown_event_type"),
        (b'{"event_type":"book","asset_id":"1","bids":[],"asks":[]}', "missing_field"),
        (b'{"event_type":"book","asset_id":7,"bids":[],"asks":[],"timestamp":"1"}', "bad_type"),
        (b'{"event_type":"book","asset_id":"1","bids":{},"asks":[],"timestamp":"1"}', "bad_type"),
        (b'{"event_type":"book","asset_id":"1","bids":[{"price":"abc","size":"1"}],"asks":[],"timestamp":"1"}',
         "bad_number"),
        (b'{"event_type":"book","asset_id":"1","bids":[{"price":"NaN","size":"1"}],"asks":[],"timestamp":"1"}',
         "bad_number"),
        (b'{"event_type":"book","asset_id":"1","bids":[],"asks":[],"timestamp":"soon"}', "bad_number"),
        (b'{"event_type":"book","asset_id":"1","bids":[{"price":true,"size":"1"}],"asks":[],"timestamp":"1"}',
         "bad_type"),
        (b'{"event_type":"price_change","market":"m","timestamp":"1","price_changes":[{"asset_id":"1",'
         b'"price":"0.5","size":"1","side":"HOLD"}]}', "bad_type"),
        (b'{"event_type":"price_change","market":"m","timestamp":"1"}', "missing_field"),
    ],
)  # fmt: skip
def test_malformed_frames_raise_with_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(WireError) as e:
        parse_frame(frame)
    assert e.value.reason == reason


def test_oversize_frame() -> None:
    big = orjson.dumps(_book(UP)) + b" " * 2000
    with pytest.raises(WireError) as e:
        parse_frame(big, max_bytes=1000)
    assert e.value.reason == "oversize"
    assert len(parse_frame(big, max_bytes=10_000)) == 1


def test_partial_keeps_good_siblings() -> None:
    frame = orjson.dumps([_book(UP), {"event_type": "mystery"}, _book(DN)])
    with pytest.raises(WireError):
        parse_frame(frame)
    events, errors = parse_frame_partial(frame)
    assert [e.asset_id for e in events] == [UP, DN]  # type: ignore[union-attr]
    assert [e.reason for e in errors] == ["unknown_event_type"]
    with pytest.raises(WireError):
        parse_frame_partial(b"[{")


def test_numbers_accepted_as_json_numbers() -> None:
    d = _book(UP)
    d["bids"] = [{"price": 0.4, "size": 3}]
    d["timestamp"] = 1757908892351
    (b,) = parse_frame(orjson.dumps(d))
    assert b.bids == [(0.4, 3.0)] and b.timestamp == 1757908892351
    assert not math.isnan(b.bids[0][0])


def test_subscription_messages() -> None:
    m = orjson.loads(subscribe_message([UP, DN]))
    assert m == {"assets_ids": [UP, DN], "type": "market", "custom_feature_enabled": True}
    assert orjson.loads(operation_message("unsubscribe", [UP])) == {"operation": "unsubscribe", "assets_ids": [UP]}
    with pytest.raises(ValueError):
        operation_message("resubscribe", [UP])
