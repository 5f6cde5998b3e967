"""When to look up which Polymarket window: the housekeeping loop of the Polymarket client.

``DiscoverySchedule(settings, markets, specs, now_ms, on_windows, ...)`` shares the client's ``markets`` and
``specs`` dicts. Every ``maintain_interval_s`` (or earlier, when :attr:`wake` is set because event time reached
:attr:`due_ms`) it advances each market to its current window (counting a switch in ``ROLLOVERS``) and looks up
the windows it still needs: a series market needs its current window and every window starting within
``discovery_lead_s`` of "now" (:func:`observer_svc.discovery.series_starts`), a fixed market its one window. Each
missing window is looked up by its own background task (at most ``discovery_concurrency`` per market at once,
each with its own exponential backoff with jitter), so a slow venue delays a lookup but never the next ones, and
with an event clock running many times faster than the wall clock (a simulator, a replay) the lookups run ahead
of the ticks instead of chasing them. A window that ended before its answer arrived is dropped. After every
pass and every new window it awaits ``on_windows()`` (the client re-indexes tokens and syncs its subscription).
Housekeeping never dies: an error is logged once per type and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from common import metrics
from common.episodes import episodes
from common.log import kv, log_once
from common.markets import MarketSpec
from common.settings import Settings
from observer_svc.discovery import Discovery, DiscoveryError, series_starts
from observer_svc.market_alerts import DiscoveryMonitor
from observer_svc.polymarket_state import PolymarketMarketState
from observer_svc.polymarket_wire import VENUE

log = logging.getLogger("observer.polymarket")

_P = "fusion_observer_polymarket_"
ROLLOVERS = metrics.counter(_P + "rollovers", "switches to the next window of a series", ("venue", "market"))
DISCOVERY_ERRORS = metrics.counter(_P + "discovery_errors", "market discovery failures", ("venue", "market", "reason"))


class DiscoverySchedule:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        markets: dict[str, PolymarketMarketState],
        specs: dict[str, MarketSpec],
        now_ms: Callable[[], int],
        on_windows: Callable[[], Awaitable[None]],
        maintain_interval_s: float = 0.25,
        discovery_retry_s: tuple[float, float] = (1.0, 15.0),
        discovery_concurrency: int = 4,
    ) -> None:
        self.settings = settings
        self.markets, self.specs = markets, specs
        self.now_ms = now_ms
        self.on_windows = on_windows
        self.maintain_interval_s = maintain_interval_s
        self.discovery_retry_s = discovery_retry_s
        self.discovery_concurrency = discovery_concurrency
        self.discovery: Discovery | None = None  # set by the client's run() (it owns the HTTP client)
        self.wake = asyncio.Event()  # wakes housekeeping early (event time reached a due point)
        self.due_ms: int | None = None  # event time at which housekeeping has work (next discovery/switch)
        self._last_cid: dict[str, str | None] = {}
        # (market, window start s | None for a fixed market) -> lookup in flight / (not before monotonic, failures)
        self._disc_task: dict[tuple[str, int | None], asyncio.Task[None]] = {}
        self._disc_retry: dict[tuple[str, int | None], tuple[float, int]] = {}
        self.alerts = DiscoveryMonitor(episodes(settings.redis_url))

    def add_market(self, name: str) -> None:
        self._last_cid[name] = None

    def in_flight(self) -> list[asyncio.Task[None]]:
        """The lookups running now (the client cancels them on shutdown)."""
        return list(self._disc_task.values())

    async def loop(self, closed: asyncio.Event) -> None:
        while not closed.is_set():
            try:
                await self.maintain_once()
            except Exception as e:  # never let housekeeping die
                log_once(log, f"pm-maintain:{type(e).__name__}", "polymarket housekeeping error", error=repr(e))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.maintain_interval_s)

    async def maintain_once(self) -> None:
        now = self.now_ms()
        if now <= 0:  # an event clock before its first event: nothing is known yet
            return
        lead_ms = int(self.settings.discovery_lead_s * 1000)
        due: int | None = None
        for name, st in self.markets.items():
            spec = self.specs[name]
            cur = st.advance(now)
            cid = cur.condition_id if cur is not None else None
            prev = self._last_cid[name]
            if cid != prev:
                if prev is not None and cid is not None:
                    ROLLOVERS.labels(VENUE, name).inc()
                kv(log, logging.INFO, "polymarket window", market=name, slug=cur.slug if cur else None, now_ms=now)
                self._last_cid[name] = cid
            if not spec.is_series:
                if st.latest_window is None:
                    self.discover(name, None)
                continue
            starts, next_due = series_starts(spec, now, lead_ms)
            known = {w.slug for w in st.windows()}
            for start in starts:
                if spec.series_slug(start) not in known:
                    self.discover(name, start)
            if due is None or next_due < due:
                due = next_due
        self.due_ms = due
        await self.on_windows()

    def discover(self, name: str, start: int | None) -> None:
        """Look up one window (series: the one starting at ``start``; fixed market: ``None``) in the
        background, unless that lookup is running, waiting out its backoff, or the market already has
        ``discovery_concurrency`` lookups in flight."""
        key = (name, start)
        t = self._disc_task.get(key)
        if t is not None and not t.done():
            return
        not_before, _ = self._disc_retry.get(key, (0.0, 0))
        if time.monotonic() < not_before:
            return
        busy = sum(1 for (n, _), x in self._disc_task.items() if n == name and not x.done())
        if busy >= self.discovery_concurrency:
            return
        self._disc_task[key] = asyncio.create_task(self._discover_task(name, start), name=f"pm-disc-{name}-{start}")

    def _needed_now(self, spec: MarketSpec, start: int | None) -> bool:
        """The lookup was for the window the tick loop needs now (a fixed market's, a series' current one)."""
        if start is None or spec.interval_s is None:
            return True
        now = self.now_ms()
        return start * 1000 <= now < (start + int(spec.interval_s)) * 1000

    async def _discover_task(self, name: str, start: int | None) -> None:
        assert self.discovery is not None
        spec, st = self.specs[name], self.markets[name]
        key = (name, start)
        try:
            if start is not None:
                w = await self.discovery.series_window(spec, start)
            else:
                w = await self.discovery.current_window(spec, self.now_ms())
        except DiscoveryError as e:
            DISCOVERY_ERRORS.labels(VENUE, name, "http").inc()
            log_once(log, f"pm-disc:{name}:{e}", "polymarket discovery failed", market=name, error=str(e))
            self.alerts.failed(name, str(e), start_s=start)
            w = None
        finally:
            self._disc_task.pop(key, None)
        if w is None:
            if self._needed_now(spec, start):
                what = spec.series_slug(start) if start is not None else spec.name
                self.alerts.failed(name, f"no window found for {what}", start_s=start)
            _, fails = self._disc_retry.get(key, (0.0, 0))
            base, cap = self.discovery_retry_s
            delay = random.uniform(base / 2, min(cap, base * 2**fails))
            self._disc_retry[key] = (time.monotonic() + delay, fails + 1)
            return
        self._disc_retry.pop(key, None)
        self.alerts.found(name, w.slug)
        if spec.is_series and w.end_ms <= self.now_ms():
            return  # over before the answer came: no tick will need it
        if st.add_window(w):
            kv(log, logging.INFO, "polymarket discovered", market=name, slug=w.slug, start=start)
            await self.on_windows()
