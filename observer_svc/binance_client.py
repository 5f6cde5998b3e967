"""Binance IO: one combined-stream websocket for a set of symbols, REST snapshots and kline warm-up.

Public API::

    client = BinanceClient(settings, symbols, gate=None, on_event_time=None, on_end=None, on_bad_frame=None)
    client.symbols: dict[str, SymbolAggregates]     # upper-case symbol -> aggregates (fill_raw, flags)
    await client.run()        # connect, read, reconnect until close() (or an end-of-data close)
    await client.close()
    client.stats() -> dict    # frames, parse_errors{reason}, reconnects, book_resyncs, connections

Behaviour: the URL is ``{binance_ws}/stream?streams=...`` from ``Settings.venue_urls()`` and
``settings.binance_streams`` (``aggTrade``, ``trade``, ``kline_1m``, ``bookTicker``, ``depth@100ms`` ...).
On every connect the depth books are invalidated and a REST snapshot is fetched per symbol (again
after any gap); klines are backfilled once at start (and for the missed minutes after a
reconnect). An unavailable REST endpoint (404/400, connection refused) is logged once and the
stream continues without it. Reconnects use exponential backoff with full jitter; the connection
is renewed before Binance's 24 h cut (``binance_reconnect_before_s``) and at once on
``serverShutdown``. A malformed frame is counted (``fusion_observer_parse_errors{venue,reason}``),
logged once per reason, handed to ``on_bad_frame`` and skipped. With a ``gate`` every mutation
goes through ``gate.submit(venue, event_ms, apply)`` (event-time ordering for replays) with an int
``event_ms`` (a mutation without exchange time -- spot bookTicker, snapshot, backfill -- takes the
newest time submitted so far, or is applied at once before the first frame); without a gate it is
applied at once and ``on_event_time(venue, event_ms)`` is called. A server close
whose reason starts with :data:`END_OF_DATA_REASON` (a replay that ended) calls ``on_end(venue)`` and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common import metrics
from common.log import kv, log_once
from observer_svc.binance_aggregates import SymbolAggregates
from observer_svc.binance_wire import (
    DepthUpdate,
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

log = logging.getLogger("observer.binance")

VENUE = "binance"
END_OF_DATA_REASON = "end of data"
FRAMES_IN = metrics.counter("fusion_observer_frames_in", "websocket frames received", ("venue",))
PARSE_ERRORS = metrics.counter("fusion_observer_parse_errors", "malformed frames skipped", ("venue", "reason"))
RECONNECTS = metrics.counter("fusion_observer_reconnects", "websocket reconnects", ("venue",))
BOOK_RESYNCS = metrics.counter("fusion_observer_book_resyncs", "depth-book snapshot re-syncs", ("venue",))


class Gate(Protocol):
    def submit(self, venue: str, event_ms: int | None, apply: Callable[[], None]) -> None: ...


class BinanceClient:
    """Orchestrates connect/subscribe/reconnect; all logic lives in the wire/book/aggregate modules."""

    def __init__(
        self,
        settings: Any,
        symbols: Iterable[str],
        *,
        gate: Gate | None = None,
        on_event_time: Callable[[str, int], None] | None = None,
        on_end: Callable[[str], None] | None = None,
        on_bad_frame: Callable[[str, str, bytes | str], None] | None = None,
        venue: str = VENUE,
        http_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.venue = venue
        self.kind = settings.binance_kind
        urls = settings.venue_urls()
        self.ws_base, self.rest_base = urls["binance_ws"], urls["binance_rest"]
        syms = sorted({s.upper() for s in symbols})
        self.suffixes = list(settings.binance_streams)
        self.depth = any(is_depth_stream(x) for x in self.suffixes)
        self.has_klines = any(x.startswith("kline_") for x in self.suffixes)
        self.symbols: dict[str, SymbolAggregates] = {
            s: SymbolAggregates.from_settings(s, settings, with_book=self.depth) for s in syms
        }
        self.url = combined_url(self.ws_base, stream_names(syms, self.suffixes))
        self.gate = gate
        self.on_event_time = on_event_time
        self.on_end = on_end
        self.on_bad_frame = on_bad_frame
        self.max_frame_bytes = int(settings.max_frame_bytes)
        self.http_timeout_s = http_timeout_s
        # stats
        self.frames = 0
        self.parse_errors: dict[str, int] = {}
        self.reconnects = 0
        self.book_resyncs = 0
        self.connections = 0
        self.connected = False
        # internals
        self._m_frames = FRAMES_IN.labels(venue)
        self._m_reconnects = RECONNECTS.labels(venue)
        self._m_resyncs = BOOK_RESYNCS.labels(venue)
        self._closing = False
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._snap_tries: dict[str, int] = {}
        self._gaps_seen: dict[str, int] = {}
        self._rest_down: set[str] = set()
        self._shutdown = False
        self._backfilled = False
        self._down_since: float | None = None
        self._last_em: int | None = None  # newest event time handed to the gate

    # ------------------------------------------------------------------ public
    def stats(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "parse_errors": dict(self.parse_errors),
            "reconnects": self.reconnects,
            "book_resyncs": self.book_resyncs,
            "connections": self.connections,
            "connected": self.connected,
        }

    async def run(self) -> None:
        attempt = 0
        self._http = httpx.AsyncClient(timeout=self.http_timeout_s)
        prefetched = False
        if self.settings.event_clock:
            # replay/sim: take the REST snapshot and the kline warm-up *before* the stream opens (a
            # replayer starts sending when we connect), so two replays of one input are identical;
            # live keeps Binance's documented order (stream first, then snapshot)
            await asyncio.gather(*(self._fetch_snapshot(s) for s in self.symbols if self.depth),
                                 *(self._backfill(s, 1500) for s in self.symbols))  # fmt: skip
            self._backfilled = prefetched = True
        try:
            while not self._closing:
                reason = "error"
                t0 = time.monotonic()
                try:
                    async with connect(
                        self.url,
                        max_size=self.max_frame_bytes * 8,
                        ping_interval=20,
                        ping_timeout=60,
                        open_timeout=10,
                        close_timeout=2,
                    ) as ws:
                        self._ws = ws
                        self._on_connected(keep_books=prefetched)
                        prefetched = False
                        reason = await self._read(ws)
                except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as e:
                    log_once(log, f"{self.venue}:connect:{type(e).__name__}", "binance connection failed",
                             error=repr(e)[:200], url=self.url[:200])  # fmt: skip
                finally:
                    self._ws = None
                    if self.connected:
                        self._down_since = time.time()
                    self.connected = False
                if reason == "end":
                    kv(log, logging.INFO, "binance feed ended", url=self.url[:120])
                    if self.on_end is not None:
                        self.on_end(self.venue)
                    return
                if self._closing:
                    break
                self.reconnects += 1
                self._m_reconnects.inc()
                if reason in ("renew", "shutdown"):
                    delay, attempt = 0.0, 0
                else:
                    if time.monotonic() - t0 > 60:
                        attempt = 0
                    cap = min(self.settings.reconnect_max_s, self.settings.reconnect_base_s * 2**attempt)
                    delay = random.uniform(0, cap)
                    attempt += 1
                kv(log, logging.INFO, "binance reconnecting", reason=reason, delay_s=round(delay, 3))
                await self._sleep(delay)
        finally:
            for t in list(self._tasks.values()):
                t.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()
            await self._http.aclose()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    # ------------------------------------------------------------------ connection
    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _on_connected(self, keep_books: bool = False) -> None:
        self.connected = True
        self.connections += 1
        self._shutdown = False
        kv(log, logging.INFO, "binance connected", n=self.connections, symbols=",".join(self.symbols))
        if self.depth and not keep_books:
            for sym, agg in self.symbols.items():
                if agg.book is not None:
                    self._submit(None, agg.book.invalidate)
                self._snap_tries[sym] = 0
                self._rest_down.discard(sym)
                self._spawn(f"snap:{sym}", self._fetch_snapshot(sym))
        if not self._backfilled:
            self._backfilled = True
            for sym in self.symbols:
                self._spawn(f"klines:{sym}", self._backfill(sym, 1500))
        elif self._down_since is not None:
            missed = int((time.time() - self._down_since) // 60) + 3
            for sym in self.symbols:
                self._spawn(f"klines:{sym}", self._backfill(sym, min(1500, missed)))

    async def _read(self, ws: ClientConnection) -> str:
        loop = asyncio.get_running_loop()
        if self.settings.event_clock:
            # event time (replay/sim): the REST snapshot and kline warm-up are applied before the first
            # frame, so two replays of the same input build the same book at the same event time
            pending = [t for name, t in self._tasks.items() if name.startswith(("snap:", "klines:"))]
            if pending:
                await asyncio.wait(pending, timeout=15)
        try:
            async with asyncio.timeout_at(loop.time() + self.settings.binance_reconnect_before_s):
                async for msg in ws:
                    self._on_frame(msg)
                    if self._shutdown:
                        return "shutdown"
        except TimeoutError:
            return "renew"
        except ConnectionClosed:
            pass
        reason = ws.close_reason or ""
        return "end" if reason.lower().startswith(END_OF_DATA_REASON) else "closed"

    # ------------------------------------------------------------------ frames
    def _submit(self, event_ms: int | None, fn: Callable[[], None]) -> None:
        if self.gate is not None:
            if event_ms is None:
                # no exchange time (spot bookTicker, snapshots, invalidation, backfill): ordered after our
                # newest frame; before any frame nothing of ours is queued, so apply at once
                if self._last_em is None:
                    fn()
                    return
                event_ms = self._last_em
            elif self._last_em is None or event_ms > self._last_em:
                self._last_em = event_ms
            self.gate.submit(self.venue, event_ms, fn)
        else:
            fn()
            if event_ms is not None and self.on_event_time is not None:
                self.on_event_time(self.venue, event_ms)

    def _bad(self, reason: str, detail: str, raw: bytes | str) -> None:
        self.parse_errors[reason] = self.parse_errors.get(reason, 0) + 1
        PARSE_ERRORS.labels(self.venue, reason).inc()
        log_once(log, f"{self.venue}:bad:{reason}", "malformed binance frame skipped", reason=reason,
                 detail=detail[:120], sample=bytes(raw[:120]) if not isinstance(raw, str) else raw[:120])  # fmt: skip
        if self.on_bad_frame is not None:
            self.on_bad_frame(self.venue, reason, raw)

    def _on_frame(self, raw: bytes | str) -> None:
        self.frames += 1
        self._m_frames.inc()
        try:
            ev = parse_frame(raw, self.max_frame_bytes)
        except WireError as e:
            self._bad(e.reason, e.detail, raw)
            return
        if type(ev) is ServerShutdown:
            self._shutdown = True
            kv(log, logging.INFO, "binance serverShutdown received")
            return
        agg = self.symbols.get(ev.symbol) if ev.symbol is not None else None
        if agg is None:
            self._bad("unknown_symbol", str(ev.symbol), raw)
            return
        em: int | None = getattr(ev, "event_time_ms", None)
        if type(ev) is DepthUpdate:
            self._submit(em, partial(self._apply_depth, agg, ev))
        else:
            self._submit(em, partial(agg.on_event, ev))

    def _apply_depth(self, agg: SymbolAggregates, ev: DepthUpdate) -> None:
        if agg.on_depth(ev):
            self._want_snapshot(agg)

    def _want_snapshot(self, agg: SymbolAggregates) -> None:
        book = agg.book
        if book is None:
            return
        if book.resyncs != self._gaps_seen.get(agg.symbol, 0):
            self._gaps_seen[agg.symbol] = book.resyncs
            self.book_resyncs += 1
            self._m_resyncs.inc()
            kv(log, logging.INFO, "binance book gap: re-syncing", symbol=agg.symbol, u=book.last_update_id)
        if agg.symbol not in self._rest_down and self.connected:
            self._spawn(f"snap:{agg.symbol}", self._fetch_snapshot(agg.symbol))

    def _spawn(self, name: str, coro: Any) -> None:
        t = self._tasks.get(name)
        if t is not None and not t.done():
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[name] = task

        def _forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(name) is done:
                del self._tasks[name]

        task.add_done_callback(_forget)

    # ------------------------------------------------------------------ REST
    async def _get(self, url: str, what: str, sym: str) -> bytes | None:
        """GET ``url``; None when unavailable (logged once). Raises httpx errors worth retrying."""
        assert self._http is not None
        r = await self._http.get(url)
        if r.status_code in (400, 404, 405, 501):
            log_once(log, f"{self.venue}:rest:{what}:{r.status_code}", "binance REST endpoint unavailable",
                     what=what, status=r.status_code, url=url[:160])  # fmt: skip
            return None
        r.raise_for_status()
        return r.content

    async def _fetch_snapshot(self, sym: str) -> None:
        tries = self._snap_tries.get(sym, 0)
        self._snap_tries[sym] = tries + 1
        if tries:  # a retry (stale snapshot or failure): back off, let events buffer
            cap = min(self.settings.reconnect_max_s, self.settings.reconnect_base_s * 2 ** min(tries, 10))
            await asyncio.sleep(random.uniform(cap / 2, cap))
        try:
            body = await self._get(depth_url(self.rest_base, self.kind, sym, 1000), "depth", sym)
            if body is None:
                self._rest_down.add(sym)
                return
            snap = parse_depth_snapshot(body, sym)
        except (httpx.HTTPError, WireError) as e:
            log_once(log, f"{self.venue}:rest:depth:{type(e).__name__}", "binance depth snapshot failed",
                     symbol=sym, error=repr(e)[:160])  # fmt: skip
            if not self._closing:
                self._spawn_later(sym)
            return
        agg = self.symbols[sym]
        self._submit(None, partial(self._apply_snapshot, agg, snap))

    def _spawn_later(self, sym: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: self._spawn(f"snap:{sym}", self._fetch_snapshot(sym)))

    def _apply_snapshot(self, agg: SymbolAggregates, snap: Any) -> None:
        if agg.apply_snapshot(snap):
            self._snap_tries[agg.symbol] = 0
            kv(log, logging.INFO, "binance book synced", symbol=agg.symbol, last_update_id=snap.last_update_id)
        elif agg.book is not None and agg.book.needs_snapshot:
            self._want_snapshot(agg)

    async def _backfill(self, sym: str, limit: int) -> None:
        try:
            body = await self._get(klines_url(self.rest_base, self.kind, sym, limit), "klines", sym)
            if body is None:
                return
            rows = parse_klines_rest(body)
        except (httpx.HTTPError, WireError) as e:
            log_once(log, f"{self.venue}:rest:klines:{type(e).__name__}", "binance klines backfill failed",
                     symbol=sym, error=repr(e)[:160])  # fmt: skip
            return
        if rows:
            self._submit(None, partial(self._apply_backfill, self.symbols[sym], rows))

    @staticmethod
    def _apply_backfill(agg: SymbolAggregates, rows: list[Any]) -> None:
        agg.backfill_klines(rows)
