"""The recorded driver over real sockets: byte-for-byte Binance frames, Polymarket rows as books.

Binance: the licensed excerpt in tests/fixtures/real; Polymarket: a synthetic CSV in the recorded layout.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
from calendar import timegm
from pathlib import Path
from time import strptime

import httpx
import pytest
import websockets

from observer_svc.sim import RecordedDriver, SimServer, token_ids

SPOT = "binance_raw_ws_spot__hftbacktest/spot"


def _lines(path: Path) -> list[bytes]:
    out = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            raw = line.rstrip(b"\n").split(b" ", 1)[1]
            if raw.startswith(b'{"stream"'):
                out.append(raw)
    return out


async def _drain(ws) -> tuple[list, int | None, str | None]:
    frames = []
    try:
        async for m in ws:
            frames.append(m)
    except websockets.ConnectionClosed:
        pass
    return frames, ws.close_code, ws.close_reason


def test_binance_frames_byte_for_byte_in_order_then_end_of_data(recorded_data: Path) -> None:
    files = sorted((recorded_data / SPOT).glob("ethusdt_*.gz"))  # the files of a symbol, concatenated
    want = [line for f in files for line in _lines(f)]
    first_e = next(json.loads(f)["data"]["E"] for f in want if b'"E":' in f)  # bookTicker has no E
    last_e = max(json.loads(f)["data"].get("E", 0) for f in want)

    async def main() -> None:
        d = RecordedDriver(binance=recorded_data / SPOT, symbols=["ethusdt"], speed=0)
        async with SimServer(d) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            assert (await http.get("/binance/api/v3/time")).json() == {"serverTime": first_e}
            snap = await http.get("/binance/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 1000})
            with gzip.open(files[0], "rb") as fh:
                recorded = next(line for line in fh if b'"lastUpdateId"' in line).rstrip(b"\n").split(b" ", 1)[1]
            assert snap.content == recorded  # verbatim before the replay moves past it
            url = srv.url.replace("http://", "ws://")
            streams = "ethusdt@depth@100ms/ethusdt@bookTicker/ethusdt@trade"
            async with websockets.connect(f"{url}/binance/stream?streams={streams}", max_size=None) as ws:
                frames, code, reason = await _drain(ws)
            assert [f.encode() for f in frames] == want
            assert (code, reason) == (1000, "end of data")
            # after the replay the depth endpoint serves the rebuilt book at the last replayed id
            snap2 = (await http.get("/binance/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5})).json()
            last_u = max(json.loads(f)["data"]["u"] for f in want if b"depthUpdate" in f)
            assert snap2["lastUpdateId"] == last_u and len(snap2["bids"]) == 5
            assert float(snap2["bids"][0][0]) < float(snap2["asks"][0][0])
            rows = (await http.get("/binance/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m"})).json()
            span_min = (last_e - first_e) / 60_000
            assert span_min <= len(rows) <= span_min + 2 and all(len(r) == 12 for r in rows)
            st = (await http.get("/sim/status")).json()
            assert st["finished"] and st["frames_sent"]["binance"] == len(want)

    asyncio.run(main())


def _ms(s: str) -> int:
    return timegm(strptime(s, "%Y-%m-%d %H:%M:%S")) * 1000


def test_polymarket_rows_become_books_with_discovery(synthetic_poly_csv: Path) -> None:
    with open(synthetic_poly_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = [r for r in rows if r["TargetTime"] == rows[0]["TargetTime"]]
    start = _ms(first[0]["TargetTime"]) // 1000
    slug = f"btc-updown-15m-{start}"
    up, down = token_ids(slug)

    async def main() -> None:
        d = RecordedDriver(polymarket=synthetic_poly_csv, speed=0)
        d.hold_unsubscribed_s = 0.5  # only the first window is subscribed: later windows' books are given up fast
        async with SimServer(d) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            assert (await http.get("/binance/fapi/v1/time")).json()["serverTime"] == _ms(rows[0]["Timestamp"])
            ev = (await http.get("/gamma/events", params={"slug": slug})).json()
            assert ev[0]["endDate"] == first[0]["Expiration"].replace(" ", "T") + "Z"
            assert json.loads(ev[0]["markets"][0]["clobTokenIds"]) == [up, down]
            cm = (await http.get(f"/clob/markets/{ev[0]['markets'][0]['conditionId']}")).json()
            assert {t["outcome"]: t["token_id"] for t in cm["tokens"]} == {"Up": up, "Down": down}
            url = srv.url.replace("http://", "ws://")
            async with websockets.connect(f"{url}/polymarket/ws/market", max_size=None) as ws:
                await ws.send(json.dumps({"assets_ids": [up, down], "type": "market", "custom_feature_enabled": True}))
                await ws.send("PING")
                frames, code, reason = await _drain(ws)
        assert "PONG" in frames and (code, reason) == (1000, "end of data")
        evs = [json.loads(f) for f in frames if f != "PONG"]
        books = [e for e in evs if isinstance(e, dict) and e["event_type"] == "book"]
        assert len(books) == 2 * len(first)
        for r, (bu, bd) in zip(first, zip(books[::2], books[1::2], strict=True), strict=True):
            assert bu["asset_id"] == up and bd["asset_id"] == down
            assert bu["timestamp"] == str(_ms(r["Timestamp"])) == bd["timestamp"]
            if float(r["UpBid"]) > 0:
                assert float(bu["bids"][0]["price"]) == float(r["UpBid"])
                assert float(bu["bids"][0]["size"]) == pytest.approx(float(r["UpBidLiquidity"]))
            if float(r["DownAsk"]) > 0:
                assert float(bd["asks"][0]["price"]) == float(r["DownAsk"])
        res = [e for e in evs if isinstance(e, dict) and e["event_type"] == "market_resolved"]
        last_mid = next(float(r["UpMid"]) for r in reversed(first) if float(r["UpMid"]) > 0)
        assert last_mid >= 0.9 or last_mid <= 0.1  # the synthetic file decides every window
        assert len(res) == 1 and res[0]["winning_asset_id"] == (up if last_mid >= 0.9 else down)

    asyncio.run(main())


def test_aligned_replay_puts_polymarket_on_the_binance_timeline(recorded_data: Path, synthetic_poly_csv: Path) -> None:
    d = RecordedDriver(binance=recorded_data / SPOT, polymarket=synthetic_poly_csv, symbols=["btcusdt"])
    b0 = d._bseq[0][0]
    first = min(d.windows(), key=lambda w: w.start_ms)
    assert first.start_ms <= b0 < first.end_ms and d.shift_ms % 900_000 == 0
    assert d.now_ms <= b0 and {"binance", "polymarket"} == d.venues()
