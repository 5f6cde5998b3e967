"""BinanceClient against a real local websocket + HTTP server (no mocks of the socket)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from common import metrics
from common.settings import Settings
from observer_svc.binance_client import END_OF_DATA_REASON, BinanceClient

T0 = 1_723_161_600_000


def trade(T: int, p: float, q: float, sell: bool = False) -> bytes:
    d = {
        "e": "aggTrade",
        "E": T + 1,
        "a": 1,
        "s": "BTCUSDT",
        "p": str(p),
        "q": str(q),
        "f": 1,
        "l": 1,
        "T": T,
        "m": sell,
    }
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": d})


def depth(U: int, u: int, pu: int, E: int, bids: list[list[str]]) -> bytes:
    d = {"e": "depthUpdate", "E": E, "T": E, "s": "BTCUSDT", "U": U, "u": u, "pu": pu, "b": bids, "a": []}
    return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": d})


def ticker(u: int, bid: float, ask: float, E: int) -> bytes:
    d = {"e": "bookTicker", "u": u, "s": "BTCUSDT", "b": str(bid), "B": "1", "a": str(ask), "A": "2", "T": E, "E": E}
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": d})


GARBAGE = [
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,',  # truncated
    b"not json at all",
    orjson.dumps({"stream": "btcusdt@markPrice", "data": {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT"}}),
    orjson.dumps(
        {
            "stream": "btcusdt@aggTrade",
            "data": {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "p": [], "q": "1", "T": 1, "m": True},
        }
    ),  # fmt: skip
    b'{"stream":"btcusdt@aggTrade","data":{"pad":"' + b"x" * 5000 + b'"}}',  # oversize (max 2000)
    trade(T0, 1.0, 1.0).replace(b"BTCUSDT", b"DOGEUSDT"),  # not subscribed
]


class FakeBinance:
    """Scripted connections; REST depth/klines answered by ``process_request`` on the same port."""

    def __init__(self, rest_ok: bool = True, refuse_second: bool = True) -> None:
        self.rest_ok = rest_ok
        self.refuse_second = refuse_second
        self.attempts = 0
        self.paths: list[str] = []
        self.rest_hits: list[str] = []
        self.snap_id = 100

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path
        if "/fapi/v1/" in path:
            self.rest_hits.append(path)
            if not self.rest_ok:
                return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
            if "/depth" in path:
                body = {
                    "lastUpdateId": self.snap_id,
                    "E": 1,
                    "T": 1,
                    "bids": [["100.0", "1.0"]],
                    "asks": [["101.0", "1.0"]],
                }
                return connection.respond(HTTPStatus.OK, orjson.dumps(body).decode())
            rows = [
                [T0 - (3 - i) * 60_000, "99", "99", "99", "99", "5", T0 - (2 - i) * 60_000 - 1, "0", 1, "0", "0", "0"]
                for i in range(3)
            ]
            return connection.respond(HTTPStatus.OK, orjson.dumps(rows).decode())
        self.attempts += 1
        if self.attempts == 2 and self.refuse_second:  # second connection attempt refused: exercises the backoff
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        n = len(self.paths)
        if n == 1:
            for f in [trade(T0 + 1000, 100.0, 1.0), *GARBAGE, depth(95, 102, 94, T0 + 1100, [["100.5", "2"]])]:
                await ws.send(f)
            await ws.send(trade(T0 + 1200, 100.5, 2.0, sell=True))
            await asyncio.sleep(0.3)  # let the snapshot arrive
            await ws.send(depth(103, 105, 102, T0 + 1300, [["100.7", "3"]]))
            await asyncio.sleep(0.1)
            ws.transport.abort()  # drop the connection, no close frame
            return
        if n == 2:
            self.snap_id = 300
            await ws.send(depth(290, 310, 289, T0 + 5000, [["100.9", "1"]]))
            await ws.send(trade(T0 + 5100, 101.0, 1.0))
            await asyncio.sleep(0.3)
            await ws.send(ticker(311, 100.95, 101.05, T0 + 5200))
            await ws.send(orjson.dumps({"e": "serverShutdown", "E": T0 + 5300}))
            await ws.wait_closed()  # the client leaves on its own
            return
        self.snap_id = 400
        await ws.send(trade(T0 + 6000, 102.0, 1.0))
        await asyncio.sleep(0.3)
        await ws.close(1000, END_OF_DATA_REASON)


def make_settings(port: int, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        feed="sim",
        sim_url=f"http://127.0.0.1:{port}",
        binance_kind="futures",
        binance_streams=["aggTrade", "bookTicker", "depth@100ms"],
        reconnect_base_s=0.05,
        reconnect_max_s=0.2,
        max_frame_bytes=2000,
    )
    base.update(kw)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


def test_client_counts_garbage_reconnects_with_backoff_and_keeps_state() -> None:
    async def main() -> None:
        fake = FakeBinance()
        async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request) as server:
            port = server.sockets[0].getsockname()[1]
            before = metrics.snapshot()
            ended: list[str] = []
            times: list[int] = []
            client = BinanceClient(
                make_settings(port), ["btcusdt"], on_end=ended.append, on_event_time=lambda v, t: times.append(t)
            )
            await asyncio.wait_for(client.run(), 15)
            after = metrics.snapshot()
            agg = client.symbols["BTCUSDT"]
            assert ended == ["binance"]
            assert fake.paths[0] == "/binance/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker/btcusdt@depth@100ms"
            assert fake.attempts == 4 and len(fake.paths) == 3  # drop, refused (503), shutdown, end
            assert client.reconnects == 3 and client.connections == 3
            assert client.parse_errors == {
                "bad_json": 2,
                "unknown_event": 1,
                "bad_type": 1,
                "oversize": 1,
                "unknown_symbol": 1,
            }
            key = "fusion_observer_parse_errors_total{reason=bad_json,venue=binance}"
            assert after[key] - before.get(key, 0.0) == 2
            key = "fusion_observer_reconnects_total{venue=binance}"
            assert after[key] - before.get(key, 0.0) == 3
            # state survived the reconnects: 4 trades from 3 connections
            assert agg.trades == 4 and agg.last_px == 102.0
            assert agg.sell == pytest.approx(201.0 * 2 ** (-4800 / 60_000), rel=1e-9)  # decayed to T0+6000
            assert agg.last_event_ms == T0 + 6001 and max(times) == T0 + 6001
            # the book was re-synced from a fresh snapshot after each reconnect
            book = agg.book
            assert book is not None and book.valid and book.last_update_id == 400
            assert agg.bt_u == 311 and agg.best() == (100.0, 1.0, 101.0, 1.0)  # the book is newer
            assert sum("/depth" in p for p in fake.rest_hits) == 3
            assert sum("/klines" in p for p in fake.rest_hits) >= 1
            assert agg.cur_min >= 0 and agg.bars(T0, 4)[2][:3].all()  # backfilled bars
            assert client.book_resyncs == 0  # reconnect re-syncs are not gaps

    asyncio.run(main())


def test_client_without_rest_renews_connection_and_continues() -> None:
    class Server:
        def __init__(self) -> None:
            self.conns = 0

        async def handler(self, ws: ServerConnection) -> None:
            self.conns += 1
            if self.conns == 1:
                await ws.send(ticker(10, 99.0, 100.0, T0))
                await ws.send(depth(5, 12, 4, T0 + 10, [["99.5", "1"]]))
                await ws.wait_closed()  # the client renews the connection itself
                return
            await ws.send(ticker(20, 99.1, 100.1, T0 + 20))
            await ws.close(1000, END_OF_DATA_REASON)

    async def main() -> None:
        fake = FakeBinance(rest_ok=False, refuse_second=False)
        srv = Server()
        async with serve(srv.handler, "127.0.0.1", 0, process_request=fake.process_request) as server:
            port = server.sockets[0].getsockname()[1]
            client = BinanceClient(make_settings(port, binance_reconnect_before_s=0.5), ["BTCUSDT"])
            await asyncio.wait_for(client.run(), 10)
            agg = client.symbols["BTCUSDT"]
            assert srv.conns == 2 and client.reconnects == 1  # renewed before the (simulated) 24 h cut
            assert agg.book is not None and not agg.book.valid  # no REST: book never synced
            assert agg.best()[0] == 99.1  # bookTicker still serves best bid/ask
            assert fake.rest_hits  # tried, got 404, carried on
            assert client.parse_errors == {}

    asyncio.run(main())


def test_client_through_a_gate_never_submits_without_event_time() -> None:
    """With a gate (event-time replays) every mutation is submitted with an exchange time."""

    class RecordingGate:
        def __init__(self) -> None:
            self.times: list[int | None] = []

        def submit(self, venue: str, event_ms: int | None, apply: Any) -> None:
            assert venue == "binance"
            self.times.append(event_ms)
            apply()

    async def main() -> None:
        fake = FakeBinance()
        gate = RecordingGate()
        async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request) as server:
            port = server.sockets[0].getsockname()[1]
            client = BinanceClient(make_settings(port), ["BTCUSDT"], gate=gate)
            await asyncio.wait_for(client.run(), 15)
        assert gate.times and all(isinstance(t, int) and t > T0 for t in gate.times)
        agg = client.symbols["BTCUSDT"]
        assert agg.trades == 4 and agg.book is not None and agg.book.valid

    asyncio.run(main())
