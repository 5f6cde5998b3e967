"""Binance wire parsing on real recorded frames, malformed frames, names and URLs."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pytest

from observer_svc.binance_wire import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    DepthUpdate,
    Kline,
    ServerShutdown,
    WireError,
    combined_url,
    depth_url,
    is_depth_stream,
    klines_url,
    parse_depth_snapshot,
    parse_frame,
    parse_klines_rest,
    stream_names,
)


def hft_frames(recorded_data: Path, sym: str, day: str) -> list[bytes]:
    path = recorded_data / "binance_raw_ws_spot__hftbacktest" / "spot" / f"{sym}_{day}.gz"
    with gzip.open(path, "rb") as f:
        return [ln.rstrip(b"\n").partition(b" ")[2] for ln in f if ln.strip()]


def cryptofeed_frames(recorded_data: Path, name: str) -> list[bytes]:
    lines = (recorded_data / "binance_raw_ws_misc_symbols__cryptofeed" / name).read_bytes().splitlines()
    return [ln.partition(b": ")[2] for ln in lines[1:] if b": {" in ln]


@pytest.mark.parametrize(
    "sym,expected",  # the excerpt's frame counts (tests/fixtures/real/README.md)
    [
        ("btcusdt", {DepthUpdate: 599, BookTicker: 5360, AggTrade: 1381, DepthSnapshot: 1}),
        ("ethusdt", {DepthUpdate: 447, BookTicker: 3583, AggTrade: 729, DepthSnapshot: 1}),
    ],
)
def test_hftbacktest_spot_frames_all_parse(recorded_data: Path, sym: str, expected: dict[type, int]) -> None:
    counts: Counter[type] = Counter()
    frames = hft_frames(recorded_data, sym, "20240808")
    for raw in frames:
        ev = parse_frame(raw)
        counts[type(ev)] += 1
        if type(ev) is AggTrade:
            assert ev.symbol == sym.upper() and ev.price > 0 and ev.qty > 0
            assert ev.event_time_ms >= ev.trade_time_ms > 1_723_000_000_000
        elif type(ev) is BookTicker:
            assert ev.event_time_ms is None  # spot bookTicker carries no E
            assert ev.bid < ev.ask
        elif type(ev) is DepthUpdate:
            assert ev.prev_final_id is None and ev.first_id <= ev.final_id
    assert dict(counts) == expected
    by_stream = Counter(f.split(b'"', 4)[3].split(b"@", 1)[1] for f in frames if f.startswith(b'{"stream"'))
    assert by_stream == {b"depth@100ms": expected[DepthUpdate], b"bookTicker": expected[BookTicker],
                         b"trade": expected[AggTrade]}  # fmt: skip


def test_spot_trade_fields_exact(recorded_data: Path) -> None:
    raw = next(f for f in hft_frames(recorded_data, "btcusdt", "20240808") if b"@trade" in f)
    ev = parse_frame(raw)
    assert ev == AggTrade("BTCUSDT", 61837.63, 0.02, True, 1723161255342, 1723161255343)
    snap = next(f for f in hft_frames(recorded_data, "btcusdt", "20240808") if f.startswith(b'{"lastUpdateId"'))
    s = parse_depth_snapshot(snap, "BTCUSDT")
    assert s.last_update_id == 50093239218 and s.symbol == "BTCUSDT"
    assert s.bids[0] == (61837.63, 3.78826) and len(s.bids) == len(s.asks) > 100


def test_cryptofeed_futures_shapes(recorded_data: Path) -> None:
    counts: Counter[type] = Counter()
    for raw in cryptofeed_frames(recorded_data, "BINANCE_FUTURES.ws.1.0"):
        ev = parse_frame(raw)
        counts[type(ev)] += 1
        if type(ev) is BookTicker:
            assert ev.event_time_ms is not None and ev.trans_time_ms is not None
        if type(ev) is DepthUpdate:
            assert ev.prev_final_id is not None  # futures carry pu
        if type(ev) is Kline:
            assert ev.close_ms == ev.open_ms + 59_999 and ev.low <= ev.close <= ev.high
    assert counts == {BookTicker: 123, DepthUpdate: 235, Kline: 17, AggTrade: 24}  # the first 400 lines
    raw = next(f for f in cryptofeed_frames(recorded_data, "BINANCE_FUTURES.ws.1.0") if b"ctkusdt@kline" in f)
    k = parse_frame(raw)
    assert k == Kline("CTKUSDT", 1626992700000, 1626992759999, 1.01, 1.011, 1.01, 1.011, 3917.0, False, 1626992741424)


def test_cryptofeed_spot_shapes(recorded_data: Path) -> None:
    counts = Counter(type(parse_frame(raw)) for raw in cryptofeed_frames(recorded_data, "BINANCE.ws.1.0"))
    assert counts == {DepthUpdate: 177, BookTicker: 84, AggTrade: 2, Kline: 2}


def test_raw_payload_and_str_input() -> None:
    d = {"e": "aggTrade", "E": 5, "a": 1, "s": "BTCUSDT", "p": "10.5", "q": "2", "f": 1, "l": 1, "T": 4, "m": False}
    assert parse_frame(orjson.dumps(d)) == AggTrade("BTCUSDT", 10.5, 2.0, False, 4, 5)
    assert parse_frame(orjson.dumps(d).decode()) == AggTrade("BTCUSDT", 10.5, 2.0, False, 4, 5)
    assert isinstance(parse_frame(b'{"e":"serverShutdown","E":7}'), ServerShutdown)


GOOD_TRADE = {"e": "aggTrade", "E": 5, "s": "BTCUSDT", "p": "10.5", "q": "2", "T": 4, "m": False}


def _frame(data: object) -> bytes:
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


@pytest.mark.parametrize(
    "raw,reason",
    [
        (_frame(GOOD_TRADE)[:-7], "bad_json"),  # truncated
        (b"", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1,2,3]", "not_object"),
        (_frame([1, 2]), "not_object"),
        (_frame({**GOOD_TRADE, "e": "markPriceUpdate"}), "unknown_event"),
        (b'{"result":null,"id":1}', "unknown_event"),
        (_frame({k: v for k, v in GOOD_TRADE.items() if k != "p"}), "missing_field"),
        (_frame({**GOOD_TRADE, "p": None}), "bad_type"),
        (_frame({**GOOD_TRADE, "p": [1]}), "bad_type"),
        (_frame({**GOOD_TRADE, "E": "5"}), "bad_type"),
        (_frame({**GOOD_TRADE, "m": "false"}), "bad_type"),
        (_frame({**GOOD_TRADE, "s": 7}), "bad_type"),
        (_frame({**GOOD_TRADE, "p": "abc"}), "bad_value"),
        (_frame({**GOOD_TRADE, "p": "-1"}), "bad_value"),
        (_frame({**GOOD_TRADE, "q": "nan"}), "bad_value"),
        (_frame({"e": "depthUpdate", "E": 1, "s": "X", "U": 5, "u": 6, "b": [["1", "2", "3"]], "a": []}), "bad_value"),
        (_frame({"e": "depthUpdate", "E": 1, "s": "X", "U": 5, "u": 6, "b": "oops", "a": []}), "bad_type"),
        (_frame({"e": "depthUpdate", "E": 1, "s": "X", "U": 9, "u": 6, "b": [], "a": []}), "bad_value"),
        (_frame({"e": "kline", "E": 1, "s": "X", "k": "x"}), "bad_type"),
        (_frame({"u": "7", "s": "X", "b": "1", "B": "1", "a": "2", "A": "1"}), "bad_type"),
    ],
)
def test_malformed_frames_raise_wire_error(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError) as ei:
        parse_frame(raw)
    assert ei.value.reason == reason


def test_oversize() -> None:
    raw = _frame({**GOOD_TRADE, "pad": "x" * 5000})
    with pytest.raises(WireError) as ei:
        parse_frame(raw, max_bytes=1000)
    assert ei.value.reason == "oversize"
    assert isinstance(parse_frame(raw, max_bytes=10_000), AggTrade)


def test_rest_klines_rows() -> None:
    rows = [[60_000, "1", "2", "0.5", "1.5", "10", 119_999, "15", 3, "5", "7", "0"]]
    (r,) = parse_klines_rest(orjson.dumps(rows))
    assert (r.open_ms, r.open, r.high, r.low, r.close, r.volume, r.close_ms) == (60_000, 1, 2, 0.5, 1.5, 10, 119_999)
    for bad, reason in [(b"{}", "not_object"), (b"[[1,2]]", "missing_field"), (b'[["x",1,1,1,1,1,1]]', "bad_type")]:
        with pytest.raises(WireError) as ei:
            parse_klines_rest(bad)
        assert ei.value.reason == reason
    with pytest.raises(WireError):
        parse_depth_snapshot(b'{"bids":[]}')


def test_names_and_urls() -> None:
    names = stream_names(["BTCUSDT", "ethusdt"], ["aggTrade", "depth@100ms"])
    assert names == ["btcusdt@aggTrade", "btcusdt@depth@100ms", "ethusdt@aggTrade", "ethusdt@depth@100ms"]
    assert combined_url("wss://fstream.binance.com/", names[:2]) == (
        "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade/btcusdt@depth@100ms"
    )
    assert depth_url("https://fapi.binance.com", "futures", "btcusdt") == (
        "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    )
    assert depth_url("https://api.binance.com", "spot", "BTCUSDT").endswith("/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert klines_url("http://h/binance", "futures", "BTCUSDT") == (
        "http://h/binance/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1500"
    )
    assert "limit=1000" in klines_url("http://h", "spot", "BTCUSDT", 1500)  # spot caps at 1000
    assert is_depth_stream("depth@100ms") and is_depth_stream("depth") and not is_depth_stream("depth5")
