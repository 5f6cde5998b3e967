"""A small real Polymarket stand-in for tests: one `websockets` server on a free local port.

* ``ws://HOST:PORT/ws/market``: the CLOB market channel. Answers the subscribe message and
  ``operation: subscribe`` with a JSON array of ``book`` events of the known tokens (unless
  ``silent``; ``ignore_operations`` answers the first subscribe message only), ``PING`` with
  ``PONG``; records every received message per connection.
* plain HTTP GETs (``process_request``): Gamma ``/gamma/events?slug=``, ``/gamma/markets?slug=``
  and CLOB ``/clob/markets/{condition_id}``, in the venues' shapes (Gamma's ``clobTokenIds`` and
  ``outcomes`` are JSON-encoded strings). ``fail_next`` makes the next N REST calls answer 500;
  ``http_delay_s`` answers every REST call that much later (a slow or distant venue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


def iso_z(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeWindow:
    slug: str
    cid: str
    up: str
    down: str
    start_ms: int
    end_ms: int
    closed: bool = False
    outcomes: tuple[str, str] = ("Up", "Down")


@dataclass
class FakePolymarket:
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    windows: dict[str, FakeWindow] = field(default_factory=dict)  # by slug
    silent: bool = False
    ignore_operations: bool = False  # like a server that ignores subscription changes on an open socket
    fail_next: int = 0
    http_delay_s: float = 0.0
    http_log: list[str] = field(default_factory=list)
    received: list[tuple[int, str]] = field(default_factory=list)  # (connection number, text)
    connections: list[ServerConnection] = field(default_factory=list)
    server: Server | None = None

    # ------------------------------------------------------------------ data
    def add_window(
        self, slug: str, start_ms: int, end_ms: int, outcomes: tuple[str, str] = ("Up", "Down")
    ) -> FakeWindow:
        n = len(self.windows) + 1
        w = FakeWindow(slug, f"0x{n:064x}", f"{n}0001", f"{n}0002", start_ms, end_ms, outcomes=outcomes)
        self.windows[slug] = w
        return w

    def by_token(self, token: str) -> FakeWindow | None:
        return next((w for w in self.windows.values() if token in (w.up, w.down)), None)

    def book(self, token: str, bid: str = "0.48", ask: str = "0.52", ts: int | None = None) -> dict[str, Any]:
        w = self.by_token(token)
        return {
            "event_type": "book",
            "asset_id": token,
            "market": w.cid if w else "0x0",
            "bids": [{"price": "0.01", "size": "100"}, {"price": bid, "size": "30"}],
            "asks": [{"price": "0.99", "size": "100"}, {"price": ask, "size": "25"}],
            "timestamp": str(ts if ts is not None else self.clock_ms()),
            "hash": "0xfeed",
            "tick_size": "0.01",
        }

    def gamma_market(self, w: FakeWindow) -> dict[str, Any]:
        return {
            "conditionId": w.cid,
            "slug": w.slug,
            "startDate": iso_z(w.start_ms - 86_400_000),  # creation time, as live
            "eventStartTime": iso_z(w.start_ms),
            "endDate": iso_z(w.end_ms),
            "outcomes": orjson.dumps(list(w.outcomes)).decode(),
            "clobTokenIds": orjson.dumps([w.up, w.down]).decode(),
            "active": True,
            "closed": w.closed,
        }

    # ------------------------------------------------------------------ REST
    def _http(self, conn: ServerConnection, req: Request) -> Response | None:
        url = urlsplit(req.path)
        if url.path == "/ws/market":
            return None
        self.http_log.append(req.path)
        if self.fail_next > 0:
            self.fail_next -= 1
            return conn.respond(HTTPStatus.INTERNAL_SERVER_ERROR, "boom")
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body: Any = None
        if url.path == "/gamma/events":
            w = self.windows.get(q.get("slug", ""))
            body = [] if w is None else [{"slug": w.slug, "startDate": iso_z(w.start_ms - 86_400_000),
                                          "endDate": iso_z(w.end_ms), "markets": [self.gamma_market(w)]}]  # fmt: skip
        elif url.path == "/gamma/markets":
            w = self.windows.get(q.get("slug", ""))
            body = [] if w is None else [self.gamma_market(w)]
        elif url.path.startswith("/clob/markets/"):
            cid = url.path.rsplit("/", 1)[1]
            w = next((x for x in self.windows.values() if x.cid == cid), None)
            if w is None:
                return conn.respond(HTTPStatus.NOT_FOUND, '{"error":"market not found"}')
            body = {
                "condition_id": w.cid,
                "market_slug": w.slug,
                "active": True,
                "closed": w.closed,
                "end_date_iso": iso_z(w.end_ms),
                "tokens": [
                    {"token_id": w.up, "outcome": w.outcomes[0], "price": 0.5},
                    {"token_id": w.down, "outcome": w.outcomes[1], "price": 0.5},
                ],
            }
        else:
            return conn.respond(HTTPStatus.NOT_FOUND, "no such endpoint")
        data = orjson.dumps(body)
        return Response(200, "OK", Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))]),
                        data)  # fmt: skip

    async def _http_later(self, conn: ServerConnection, req: Request) -> Response | None:
        if self.http_delay_s > 0 and urlsplit(req.path).path != "/ws/market":
            await asyncio.sleep(self.http_delay_s)
        return self._http(conn, req)

    # ------------------------------------------------------------------ websocket
    async def _handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        n = len(self.connections)
        async for msg in ws:
            text = msg if isinstance(msg, str) else msg.decode()
            self.received.append((n, text))
            if text == "PING":
                await ws.send("PONG")
                continue
            try:
                d = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            subscribe = d.get("type") == "market" or (d.get("operation") == "subscribe" and not self.ignore_operations)
            if subscribe and not self.silent:
                books = [self.book(t) for t in d.get("assets_ids", []) if self.by_token(t)]
                if books:
                    await ws.send(orjson.dumps(books).decode())

    async def push(self, frame: str | bytes | dict[str, Any] | list[Any]) -> None:
        if isinstance(frame, dict | list):
            frame = orjson.dumps(frame)
        text = frame.decode() if isinstance(frame, bytes) else frame
        for ws in list(self.connections):
            if ws.state.name == "OPEN":
                await ws.send(text)

    async def start(self) -> FakePolymarket:
        self.server = await serve(self._handler, "127.0.0.1", 0, process_request=self._http_later, compression=None)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/market"

    def messages(self, conn: int | None = None) -> list[Any]:
        """Decoded JSON messages received (optionally on one connection)."""
        out = []
        for n, t in self.received:
            if (conn is None or n == conn) and t != "PING":
                out.append(orjson.loads(t))
        return out


async def until(pred: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
