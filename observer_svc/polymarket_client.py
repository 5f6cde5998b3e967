"""Polymarket IO: one CLOB market-channel websocket for every market of the process.

Public API
----------
``PolymarketClient(settings, now_ms=None, gate=None, on_end=None, on_event_time=None, http=None)``
    ``add_market(spec: MarketSpec) -> PolymarketMarketState``   (before or while running)
    ``markets: dict[str, PolymarketMarketState]``                what the tick loop reads
    ``await run()``     connects, subscribes, reconnects; returns after :meth:`close` (or end of data)
    ``await close()``
    ``now_ms()``        the clock the tick loop owns (wall or event time); default: wall clock
    ``gate``            optional; frames are applied through ``gate.submit("polymarket", event_ms, apply)``
                        (see :mod:`observer_svc.clock`), else at once
    ``on_event_time(venue, event_ms)``   optional, called after each frame with its newest event time
    ``on_end(venue)``   optional; the feed closed with reason ``"end of data"`` (a finished replay): no reconnect

Discovery (which windows to look up, and when) is :class:`observer_svc.polymarket_schedule.DiscoverySchedule`,
run as this client's housekeeping task; this module only connects, subscribes, watches and reconnects.

Behaviour: the subscription is the union of every market's watched tokens (current window, the next
ones discovered ``discovery_lead_s`` ahead, and old ones until their ``market_resolved``), sent
first as ``{"assets_ids", "type": "market", "custom_feature_enabled": true}`` and changed on the open
socket with ``{"operation": "subscribe"|"unsubscribe"}``. The window switch itself happens in event time
inside :class:`PolymarketMarketState` exactly at the old window's end, so the stream has no gap.
Application ``PING`` every ``poly_ping_s``. Watchdog (every ``poly_watchdog_s / 4``): the decisions of
:class:`observer_svc.polymarket_watchdog.FeedHealth` (silence, a token without its book, a repaired book ->
resubscribe (unsubscribe + subscribe), then reconnect), sent on this socket.
Reconnects use exponential backoff with full jitter. Malformed frames are counted, logged once per reason
and skipped. Metrics (labels venue, market, reason; ``market="*"`` = the whole connection):
``fusion_observer_polymarket_{frames_in, parse_errors, reconnects, resubscribes}`` (module constants FRAMES_IN,
PARSE_ERRORS, RECONNECTS, RESUBSCRIBES; ``rollovers`` and ``discovery_errors`` in
:mod:`observer_svc.polymarket_schedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, WebSocketException

from common import metrics
from common.log import kv, log_once
from common.markets import MarketSpec
from common.settings import Settings
from observer_svc.discovery import Discovery
from observer_svc.polymarket_schedule import DISCOVERY_ERRORS as DISCOVERY_ERRORS  # re-exported metrics
from observer_svc.polymarket_schedule import ROLLOVERS as ROLLOVERS
from observer_svc.polymarket_schedule import DiscoverySchedule
from observer_svc.polymarket_state import PolymarketMarketState
from observer_svc.polymarket_watchdog import FeedHealth
from observer_svc.polymarket_wire import (
    PING,
    VENUE,
    Book,
    Event,
    MarketResolved,
    Pong,
    PriceChange,
    WireError,
    operation_message,
    parse_frame_partial,
    subscribe_message,
)

log = logging.getLogger("observer.polymarket")
END_OF_DATA = "end of data"
ALL = "*"


_P = "fusion_observer_polymarket_"
_VMR = ("venue", "market", "reason")
FRAMES_IN = metrics.counter(_P + "frames_in", "websocket frames received", ("venue", "market"))
PARSE_ERRORS = metrics.counter(_P + "parse_errors", "malformed frames/events skipped", _VMR)
RECONNECTS = metrics.counter(_P + "reconnects", "websocket reconnects", _VMR)
RESUBSCRIBES = metrics.counter(_P + "resubscribes", "subscription renewals", _VMR)


class Gate(Protocol):
    def submit(self, venue: str, event_ms: int | None, apply: Callable[[], None]) -> None: ...


def _wall_ms() -> int:
    return int(time.time() * 1000)


class _Reconnect(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolymarketClient:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        now_ms: Callable[[], int] | None = None,
        gate: Gate | None = None,
        on_end: Callable[[str], None] | None = None,
        on_event_time: Callable[[str, int], None] | None = None,
        http: httpx.AsyncClient | None = None,
        maintain_interval_s: float = 0.25,
        discovery_retry_s: tuple[float, float] = (1.0, 15.0),
        discovery_concurrency: int = 4,
    ) -> None:
        self.settings = settings
        urls = settings.venue_urls()
        self.ws_url = urls["polymarket_ws"]
        self.gamma_url, self.clob_url = urls["gamma"], urls["clob"]
        self.now_ms = now_ms or _wall_ms
        self.gate = gate
        self.on_end = on_end
        self.on_event_time = on_event_time
        self._http = http
        self._own_http = http is None
        self.markets: dict[str, PolymarketMarketState] = {}
        self.specs: dict[str, MarketSpec] = {}
        self.schedule = DiscoverySchedule(
            settings, self.markets, self.specs, self.now_ms, self._windows_changed,
            maintain_interval_s, discovery_retry_s, discovery_concurrency,
        )  # fmt: skip
        self.connected = asyncio.Event()
        self.connections = 0  # successful connects so far
        self._ws: ClientConnection | None = None
        self._subscribed: set[str] = set()
        self._token_owner: dict[str, str] = {}
        self._cid_owner: dict[str, str] = {}
        self.health = FeedHealth()
        self._closed = asyncio.Event()
        self._wake = asyncio.Event()  # wakes the connection loop (tokens to subscribe)
        self._tasks: list[asyncio.Task[Any]] = []
        self._ended = False
        self._session_got_data = False
        self._frames_child: dict[str, Any] = {}
        self._reconnect_reason: str | None = None

    # ------------------------------------------------------------------ markets
    def add_market(self, spec: MarketSpec) -> PolymarketMarketState:
        if spec.name in self.markets:
            return self.markets[spec.name]
        st = PolymarketMarketState(spec)
        self.markets[spec.name] = st
        self.specs[spec.name] = spec
        self.schedule.add_market(spec.name)
        self._wake.set()
        return st

    def _wanted(self) -> set[str]:
        return {t for st in self.markets.values() for t in st.tokens()}

    def _reindex(self) -> None:
        self._token_owner = {t: name for name, st in self.markets.items() for t in st.tokens()}
        self._cid_owner = {c: name for name, st in self.markets.items() for c in st.condition_ids()}

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        self.schedule.discovery = Discovery(self._http, self.gamma_url, self.clob_url)
        self._tasks = [
            asyncio.create_task(self.schedule.loop(self._closed), name="pm-maintain"),
            asyncio.create_task(self._connection_loop(), name="pm-connection"),
        ]
        try:
            await self._closed.wait()
        finally:
            await self._shutdown()

    async def close(self) -> None:
        self._closed.set()
        await self._shutdown()

    async def _shutdown(self) -> None:
        tasks = self._tasks + self.schedule.in_flight()
        self._tasks = []
        for t in tasks:
            t.cancel()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _windows_changed(self) -> None:
        """Discovery added or switched a window: re-index the tokens and sync the subscription."""
        self._reindex()
        await self._sync_subscriptions()

    # ------------------------------------------------------------------ subscriptions
    async def _send(self, msg: bytes | str) -> None:
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(msg.decode() if isinstance(msg, bytes) else msg)

    async def _sync_subscriptions(self) -> None:
        wanted = self._wanted()
        if self._ws is None:
            if wanted:
                self._wake.set()
            return
        add = sorted(wanted - self._subscribed)
        rem = sorted(self._subscribed - wanted)
        if add:
            self._subscribed.update(add)
            self.health.subscribed(add, time.monotonic())
            await self._send(operation_message("subscribe", add))
        if rem:
            self._subscribed.difference_update(rem)
            self.health.unsubscribed(rem)
            await self._send(operation_message("unsubscribe", rem))

    async def _resubscribe(self, tokens: Iterable[str], reason: str) -> None:
        toks = sorted(set(tokens) & self._subscribed)
        if not toks:
            return
        for name in sorted({self._token_owner.get(t, ALL) for t in toks}):
            RESUBSCRIBES.labels(VENUE, name, reason).inc()
        kv(log, logging.INFO, "polymarket resubscribe", reason=reason, tokens=len(toks))
        await self._send(operation_message("unsubscribe", toks))
        await self._send(operation_message("subscribe", toks))

    # ------------------------------------------------------------------ connection
    async def _connection_loop(self) -> None:
        attempt = 0
        s = self.settings
        while not self._closed.is_set() and not self._ended:
            wanted = self._wanted()
            if not wanted:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            reason = "closed"
            self._session_got_data = False
            try:
                async with connect(
                    self.ws_url,
                    max_size=8 * s.max_frame_bytes,
                    open_timeout=10,
                    close_timeout=2,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    self._subscribed = set(wanted)
                    self.health.connected(wanted, time.monotonic())
                    await ws.send(subscribe_message(sorted(wanted)).decode())
                    self.connected.set()
                    await self._session(ws)
            except _Reconnect as e:
                reason = e.reason
            except ConnectionClosed as e:
                reason = "closed"
                if e.rcvd is not None and e.rcvd.reason.lower().startswith(END_OF_DATA):
                    self._end()
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as e:
                reason = type(e).__name__
                log_once(log, f"pm-connect:{reason}", "polymarket connection failed", url=self.ws_url, error=repr(e))
            finally:
                self._ws = None
                self.connected.clear()
                self._subscribed = set()
            if self._closed.is_set() or self._ended:
                break
            RECONNECTS.labels(VENUE, ALL, reason).inc()
            attempt = 0 if self._session_got_data else attempt + 1
            delay = random.uniform(0.0, min(s.reconnect_max_s, s.reconnect_base_s * 2**attempt))
            kv(log, logging.INFO, "polymarket reconnect", reason=reason, delay_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    def _end(self) -> None:
        self._ended = True
        if self.on_end is not None:
            self.on_end(VENUE)
        self._closed.set()

    async def _session(self, ws: ClientConnection) -> None:
        """Receive until the socket closes (raises :class:`_Reconnect` when the watchdog closed it)."""
        self._reconnect_reason = None
        pinger = asyncio.create_task(self._pinger(ws))
        watchdog = asyncio.create_task(self._watchdog(ws))
        try:
            async for raw in ws:
                if self._on_frame(raw):
                    self._session_got_data = True
            if ws.close_reason and ws.close_reason.lower().startswith(END_OF_DATA):
                self._end()
            if self._reconnect_reason:
                raise _Reconnect(self._reconnect_reason)
        finally:
            pinger.cancel()
            watchdog.cancel()
            await asyncio.gather(pinger, watchdog, return_exceptions=True)

    async def _pinger(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.poly_ping_s)
            await ws.send(PING)

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Act on :meth:`FeedHealth.check` every ``poly_watchdog_s / 4`` (at most 1 s)."""
        period = self.settings.poly_watchdog_s
        while True:
            await asyncio.sleep(min(1.0, period / 4))
            resync = [t for st in self.markets.values() for t in st.books_needing_resync()]
            resubs, reason = self.health.check(time.monotonic(), period, self._subscribed, resync)
            for tokens, why in resubs:
                await self._resubscribe(tokens, why)
            if reason is not None:
                self._reconnect_reason = reason
                await ws.close(code=1000, reason=f"watchdog: {reason}")
                return

    # ------------------------------------------------------------------ frames
    def _on_frame(self, raw: str | bytes) -> bool:
        """Parse, route and apply one frame; True when it carried market data."""
        try:
            events, errors = parse_frame_partial(raw, self.settings.max_frame_bytes)
        except WireError as e:
            FRAMES_IN.labels(VENUE, ALL).inc()
            self._parse_error(e, raw)
            return False
        for err in errors:
            self._parse_error(err, raw)
        routed: list[tuple[PolymarketMarketState, Event]] = []
        event_ms: int | None = None
        for ev in events:
            if isinstance(ev, Pong):
                continue
            ts = ev.timestamp
            event_ms = ts if event_ms is None or ts > event_ms else event_ms
            routed.extend(self._route(ev))
        first = routed[0][0].name if routed else ALL
        child = self._frames_child.get(first)
        if child is None:
            child = self._frames_child[first] = FRAMES_IN.labels(VENUE, first)
        child.inc()
        if event_ms is None:
            return False
        self.health.data(time.monotonic())
        due = self.schedule.due_ms
        if due is not None and event_ms >= due:
            self.schedule.wake.set()  # a fast replay reached a discovery/rollover point

        def apply() -> None:
            for st, ev in routed:
                st.apply(ev)

        if self.gate is not None:
            self.gate.submit(VENUE, event_ms, apply)
        else:
            apply()
        if self.on_event_time is not None:
            self.on_event_time(VENUE, event_ms)
        return True

    def _parse_error(self, e: WireError, raw: str | bytes) -> None:
        PARSE_ERRORS.labels(VENUE, ALL, e.reason).inc()
        log_once(log, f"pm-wire:{e.reason}", "polymarket frame skipped", reason=e.reason, detail=e.detail,
                 head=repr(raw[:80]))  # fmt: skip

    def _route(self, ev: Event) -> list[tuple[PolymarketMarketState, Event]]:
        if isinstance(ev, PriceChange):
            per: dict[str, list[Any]] = {}
            for c in ev.changes:
                owner = self._token_owner.get(c.asset_id)
                if owner is not None:
                    per.setdefault(owner, []).append(c)
            if len(per) == 1 and len(next(iter(per.values()))) == len(ev.changes):
                return [(self.markets[next(iter(per))], ev)]
            return [(self.markets[o], PriceChange(ev.market, ev.timestamp, cs)) for o, cs in per.items()]
        if isinstance(ev, MarketResolved):
            owner = self._cid_owner.get(ev.market) or self._token_owner.get(ev.winning_asset_id)
            return [(self.markets[owner], ev)] if owner is not None else []
        asset = getattr(ev, "asset_id", None)
        owner = self._token_owner.get(asset) if isinstance(asset, str) else None
        if owner is None:
            return []
        if isinstance(ev, Book):
            self.health.got_book(ev.asset_id)
        return [(self.markets[owner], ev)]
