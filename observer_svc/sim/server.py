"""The simulator's one server: websockets (Binance combined streams, Polymarket market channel)
and plain HTTP GETs (Binance/Gamma/CLOB REST, /sim control) on one port.

Paths match ``Settings.venue_urls()`` with feed=sim|replay and base ``http://HOST:PORT``.
Guarantees: frames reach each connection in driver order through a per-connection queue; with
``speed == 0`` the driver waits for the slowest client (nothing dropped), otherwise a client
that falls ``max_queue`` frames behind is closed (1008), as a venue would. A driver with
``hold_unsubscribed_s`` (recorded rows) starts once Binance is subscribed (a client subscribes to a
Polymarket window only once event time has reached it, and event time starts with the replay) and
holds a Polymarket book until a client subscribed to its token, at any speed (the paced clock
re-anchors after a hold); a token nobody subscribes to within that time is given up, its frames
counted in ``dropped_unsubscribed`` and logged once with the reason. At the end of a
recorded driver's data each socket gets a normal close: code 1000, reason "end of data".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from common.log import log_once
from observer_svc.sim import rest
from observer_svc.sim import wire_out as wo
from observer_svc.sim.core import BOut, Driver, End, Out, POut

# a pump that cannot keep its speed (a busy machine) yields to the loop at least this often, so the
# REST endpoints (discovery) and the socket writers are served within milliseconds, not seconds
_YIELD_S = 0.005

log = logging.getLogger("fusion.sim")
_DEPTH_ALIASES = ("@depth", "@depth@100ms", "@depth@250ms", "@depth@500ms", "@depth@0ms")


class _Conn:
    __slots__ = ("ws", "venue", "q", "names", "assets", "custom", "raw_mode", "closed", "closing")

    def __init__(self, ws: ServerConnection, venue: str, maxsize: int, raw_mode: bool = False) -> None:
        self.ws, self.venue, self.raw_mode = ws, venue, raw_mode
        self.q: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.names: dict[str, str] = {}  # canonical stream -> name the client asked for
        self.assets: set[str] = set()
        self.custom = False
        self.closed = False
        self.closing = False  # the server started the close (end of data, slow consumer, drop)


class _Close:
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class SimServer:
    """``async with SimServer(driver, port=0) as srv: srv.port``: serves ``driver`` until exit."""

    def __init__(
        self,
        driver: Driver,
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue: int = 200_000,
        wait_for: Iterable[str] | None = None,
    ) -> None:
        self.driver, self.host, self._port = driver, host, port
        self.max_queue = max_queue if driver.speed > 0 else min(max_queue, 4096)
        self.wait_for = set(driver.venues() if wait_for is None else wait_for) if driver.wait_for_clients else set()
        self.hold_s = driver.hold_unsubscribed_s
        if self.hold_s is not None and "binance" in self.wait_for:
            self.wait_for.discard("polymarket")  # its rows are held per token instead (see the module doc)
        self.dropped_unsubscribed = 0
        self.coalesced_before_start = 0
        self.binance_dispatched = 0
        self.held_s = 0.0
        self._given_up: set[str] = set()
        self._held = False
        self.conns: dict[str, set[_Conn]] = {"binance": set(), "polymarket": set()}
        self.bidx: dict[str, set[_Conn]] = {}
        self.pidx: dict[str, set[_Conn]] = {}
        self.frames = {"binance": 0, "polymarket": 0}
        self.garbage_sent = 0
        self.dropped_slow = 0
        self.ended: set[str] = set()
        self.sim_now = driver.now_ms
        self.poly_silent_until = 0
        self.started = False
        self.finished = asyncio.Event()
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL for ``FUSION_SIM_URL``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> SimServer:
        self._server = await serve(
            self._handler, self.host, self._port, process_request=self._process_request, compression=None,
            max_size=1 << 20,
        )  # fmt: skip
        self._pump_task = asyncio.create_task(self._pump(), name="sim-pump")
        return self

    async def stop(self) -> None:
        if self._pump_task:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ pump
    def _subscribed(self, venue: str) -> bool:
        return any(c.names if venue == "binance" else c.assets for c in self.conns[venue])

    async def _wait(self, cond: Any) -> None:
        while not cond():
            self._changed.clear()
            await self._changed.wait()

    async def _pump(self) -> None:
        d, loop = self.driver, asyncio.get_running_loop()
        try:
            await self._wait(lambda: all(self._subscribed(v) for v in self.wait_for))
            self.started = True
            base_wall = base_sim = last_t = None
            speed = d.speed
            last_yield = loop.time()
            for t, outs in d.steps():
                if d.speed > 0:
                    gap = d.max_gap_ms is not None and last_t is not None and t - last_t > d.max_gap_ms
                    if base_wall is None or gap or d.speed != speed:  # (re)anchor; a speed change goes on from here
                        base_wall, base_sim, speed = loop.time(), t, d.speed
                    delay = base_wall + (t - base_sim) / 1000.0 / d.speed - loop.time()
                    if delay > 0.0005:
                        await asyncio.sleep(delay)
                        last_yield = loop.time()
                else:
                    await self._wait(lambda: self._subscribed("binance") or self._subscribed("polymarket"))
                self.sim_now = max(self.sim_now, t)
                last_t = t
                self._held = False
                await self._dispatch(outs)
                if self._held:  # a held book: the paced clock goes on from now
                    base_wall = None
                if loop.time() - last_yield > _YIELD_S:  # behind schedule: still let REST and sockets in
                    await asyncio.sleep(0)
                    last_yield = loop.time()
            for v in ("binance", "polymarket"):
                await self._end_venue(v)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sim pump failed")
        finally:
            self.finished.set()

    async def _put(self, c: _Conn, frame: Any) -> None:
        if c.closed:
            return
        if self.driver.speed == 0:
            await c.q.put(frame)
            return
        try:
            c.q.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_slow += 1
            c.closed = c.closing = True
            asyncio.get_running_loop().create_task(c.ws.close(1008, "slow consumer"))

    async def _dispatch(self, outs: list[Out]) -> None:
        for o in outs:
            if isinstance(o, BOut):
                subs = self.bidx.get(o.stream)
                if not subs:
                    continue
                self.binance_dispatched += 1
                payload = orjson.dumps(o.payload()) if o.raw is None else None
                env: dict[str, bytes] = {}
                for c in list(subs):
                    if o.raw is not None:
                        f = o.raw[len(o.stream) + 20 : -1] if c.raw_mode else o.raw
                    elif c.raw_mode:
                        f = payload
                    else:
                        name = c.names.get(o.stream, o.stream)
                        f = env.get(name) or env.setdefault(name, wo.combined(name, payload or b""))
                    await self._put(c, f)
            elif isinstance(o, POut):
                if self.sim_now < self.poly_silent_until:
                    continue
                if o.broadcast:
                    subs = {c for c in self.conns["polymarket"] if c.custom}
                else:
                    subs = set().union(*(self.pidx.get(a, ()) for a in o.assets))
                    if o.custom:
                        subs = {c for c in subs if c.custom}
                if not subs and self.hold_s is not None and not o.broadcast and not o.custom:
                    subs = await self._hold(o.assets)
                if not subs:
                    continue
                frame = o.encode()
                for c in subs:
                    await self._put(c, frame)
            elif isinstance(o, End):
                await self._end_venue(o.venue)

    async def _hold(self, assets: Iterable[str]) -> set[_Conn]:
        """Wait (at most ``hold_s``) until a client subscribed to one of ``assets``; its subscribers.

        Before any Binance frame reached a client, no client can know the window (its event time has not
        started): the book is not held but kept as the token's latest, which a subscriber gets first
        (the initial dump), as from the venue."""
        assets = list(assets)
        if self.binance_dispatched == 0 and "binance" in self.driver.venues():
            self.coalesced_before_start += 1
            return set()
        w = self.driver.window_by_token(assets[0]) if assets else None
        key = w.slug if w is not None else ",".join(sorted(assets))
        if key in self._given_up or self.hold_s is None:
            self.dropped_unsubscribed += 1
            return set()
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        def subs() -> set[_Conn]:
            return set().union(*(self.pidx.get(a, ()) for a in assets))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait(lambda: bool(subs())), self.hold_s)
        self._held = True
        self.held_s += loop.time() - t0
        got = subs()
        if not got:
            self._given_up.add(key)
            self.dropped_unsubscribed += 1
            log_once(log, f"unsub:{key}", "no client subscribed to a recorded Polymarket token: its books are dropped",
                     tokens=key[:200], waited_s=self.hold_s, sim_time_ms=self.sim_now)  # fmt: skip
        return got

    async def _end_venue(self, venue: str) -> None:
        if venue in self.ended:
            return
        self.ended.add(venue)
        for c in list(self.conns[venue]):
            await self._put(c, _Close(1000, "end of data"))

    # ------------------------------------------------------------------ websockets
    async def _writer(self, c: _Conn) -> None:
        try:
            while True:
                f = await c.q.get()
                if isinstance(f, _Close):
                    c.closing = True
                    await c.ws.close(f.code, f.reason)
                    return
                if isinstance(f, bytes):
                    await c.ws.send(f, text=True)
                else:
                    await c.ws.send(f)
                self.frames[c.venue] += 1
        except ConnectionClosed:
            pass
        finally:
            c.closed = True
            while not c.q.empty():
                c.q.get_nowait()

    async def _watch_client_close(self, c: _Conn) -> None:
        """A client that closes while frames are still buffered towards it stops reading (its own
        queue fills) and the close handshake would stall until its timeout: cut the TCP connection
        shortly after a client-initiated close instead."""
        while c.ws.protocol.close_rcvd is None or c.closing:
            if c.ws.state is State.CLOSED:
                return
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        if c.ws.state is not State.CLOSED and c.ws.transport is not None:
            c.ws.transport.abort()

    def _index(self, c: _Conn, key: str, add: bool) -> None:
        idx = self.bidx if c.venue == "binance" else self.pidx
        if add:
            idx.setdefault(key, set()).add(c)
        elif key in idx:
            idx[key].discard(c)
            if not idx[key]:
                del idx[key]
        self._changed.set()

    def _canon(self, name: str) -> str:
        sym, _, ev = name.partition("@")
        canon = f"{sym.lower()}@{ev}"
        if not self.driver.exact_streams and "@" + ev in _DEPTH_ALIASES:
            canon = f"{sym.lower()}@depth@100ms"
        return canon

    def _bsub(self, c: _Conn, names: Iterable[str], add: bool) -> None:
        for n in names:
            canon = self._canon(n)
            if add:
                c.names[canon] = n
            else:
                c.names.pop(canon, None)
            self._index(c, canon, add)

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        venue = "polymarket" if url.path.startswith("/polymarket") else "binance"
        c = _Conn(ws, venue, self.max_queue, raw_mode=url.path.startswith("/binance/ws"))
        self.conns[venue].add(c)
        writer = asyncio.create_task(self._writer(c))
        watch = asyncio.create_task(self._watch_client_close(c))
        try:
            if venue in self.ended:
                await self._put(c, _Close(1000, "end of data"))
            elif venue == "binance":
                q = parse_qs(url.query).get("streams", [""])[0]
                names = [s for s in q.split("/") if s]
                if c.raw_mode and url.path.count("/") >= 3:
                    names.append(url.path.rsplit("/", 1)[1])
                self._bsub(c, names, True)
            async for msg in ws:
                if venue == "binance":
                    await self._on_binance_msg(c, msg)
                else:
                    await self._on_poly_msg(c, msg)
            await asyncio.wait_for(asyncio.shield(writer), 2)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            c.closed = True
            writer.cancel()
            watch.cancel()
            self.conns[venue].discard(c)
            for k in list(c.names):
                self._index(c, k, False)
            for a in list(c.assets):
                self._index(c, a, False)

    async def _on_binance_msg(self, c: _Conn, msg: str | bytes) -> None:
        try:
            d = orjson.loads(msg)
            method, params, mid = d.get("method"), d.get("params") or [], d.get("id")
        except Exception:
            await self._put(c, orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self._bsub(c, [str(p) for p in params], method == "SUBSCRIBE")
            await self._put(c, orjson.dumps({"result": None, "id": mid}))
        elif method == "LIST_SUBSCRIPTIONS":
            await self._put(c, orjson.dumps({"result": sorted(c.names.values()), "id": mid}))
        else:
            await self._put(c, orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": mid}))

    async def _on_poly_msg(self, c: _Conn, msg: str | bytes) -> None:
        if msg in ("PING", b"PING"):
            await self._put(c, "PONG")
            return
        try:
            d = orjson.loads(msg)
            ids = [str(a) for a in d.get("assets_ids") or []]
        except Exception:
            await self._put(c, "INVALID OPERATION")
            return
        op = d.get("operation")
        if op == "unsubscribe":
            for a in ids:
                c.assets.discard(a)
                self._index(c, a, False)
            return
        if op is None:
            c.custom = bool(d.get("custom_feature_enabled", False))
        new = [a for a in ids if a not in c.assets]
        for a in new:
            c.assets.add(a)
            self._index(c, a, True)
        if d.get("initial_dump", True) and self.sim_now >= self.poly_silent_until:
            books = [b for b in (self.driver.book_event(a) for a in new) if b is not None]
            if books:
                await self._put(c, orjson.dumps(books))

    # ------------------------------------------------------------------ HTTP
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if url.path in ("/binance/stream", "/polymarket/ws/market") or url.path.startswith("/binance/ws"):
                return None
            return conn.respond(HTTPStatus.NOT_FOUND, "no such websocket path\n")
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            status, body = rest.route(self, url.path, params)
        except Exception as e:  # a bug must not kill the server: answer 500
            log.exception("sim REST %s failed", url.path)
            status, body = 500, {"error": repr(e)}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                           ("Connection", "close")])  # fmt: skip
        return Response(status, HTTPStatus(status).phrase, headers, data)

    # ------------------------------------------------------------------ control (used by rest.py)
    def status(self) -> dict:
        return {
            "driver": self.driver.name,
            "sim_time_ms": self.sim_now,
            "speed": self.driver.speed,
            "started": self.started,
            "finished": self.finished.is_set(),
            "ended": sorted(self.ended),
            "frames_sent": dict(self.frames),
            "garbage_sent": self.garbage_sent,
            "dropped_slow": self.dropped_slow,
            "dropped_unsubscribed": self.dropped_unsubscribed,
            "held_s": round(self.held_s, 3),
            "coalesced_before_start": self.coalesced_before_start,
            "connections": {v: len(cs) for v, cs in self.conns.items()},
            "subscriptions": {"binance": sorted(self.bidx), "polymarket": len(self.pidx)},
            "poly_silent_until_ms": self.poly_silent_until,
            "driver_status": self.driver.status(),
        }

    def inject(self, venue: str, oversize: int) -> int:
        n = 0
        for c in list(self.conns[venue]):
            for f in rest.garbage_frames(c, self.sim_now, oversize):
                try:
                    c.q.put_nowait(f)
                    n += 1
                except asyncio.QueueFull:
                    break
        self.garbage_sent += n
        return n

    def drop(self, venue: str) -> int:
        cs = list(self.conns[venue])
        for c in cs:
            c.closed = c.closing = True
            asyncio.get_running_loop().create_task(c.ws.close(1001, "sim drop"))
        return len(cs)
