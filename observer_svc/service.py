"""The observer process: venue clients -> (gate) -> tick loop -> state builder -> publisher.

Wiring only; the logic lives in the venue modules, :mod:`observer_svc.clock`,
:mod:`observer_svc.state_builder` and :mod:`observer_svc.publisher`.

* Live (wall clock): frames are applied as they arrive; a tick fires on every grid point of the
  wall clock and publishes the state of every market as of that moment. A tick that could not
  run on time (overload) is skipped and counted, never built late from newer data.
* Event clock (sim, replay): frames go through :class:`~observer_svc.clock.EventTimeGate`, ticks
  follow event time, and the same input gives byte-identical states.
* Lease mode: the markets this process publishes are those it holds a lease for
  (:mod:`observer_svc.leases`); it re-checks every second.
* Either mode: the process beats its presence (:mod:`observer_svc.presence`) for the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from common import metrics
from common.episodes import episodes
from common.log import kv, log_once
from common.markets import MarketSpec
from common.settings import Settings
from observer_svc.binance_client import BinanceClient
from observer_svc.clock import DirectGate, EventTimeGate, grid_ceil
from observer_svc.market_alerts import GapMonitor
from observer_svc.polymarket_client import PolymarketClient
from observer_svc.publisher import Publisher
from observer_svc.state_builder import MarketSides, StateBuilder

log = logging.getLogger("observer")

TICKS = metrics.counter("fusion_observer_ticks", "ticks built")
TICKS_MISSED = metrics.counter("fusion_observer_ticks_missed", "wall-clock ticks skipped (overload)")
TICK_SECONDS = metrics.histogram(
    "fusion_observer_tick_seconds", "time to build and encode one tick of all markets",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)  # fmt: skip


class Observer:
    def __init__(
        self, settings: Settings, specs: Sequence[MarketSpec], use_leases: bool = False, observer_id: str = "obs"
    ) -> None:
        self.settings = settings
        self.specs = {s.name: s for s in specs}
        self.observer_id = observer_id
        self.use_leases = use_leases
        self._stop = asyncio.Event()
        self._ended: set[str] = set()
        self.event_clock = settings.event_clock
        venues = ["binance", "polymarket"]
        self.gate: EventTimeGate | DirectGate
        if self.event_clock:
            self.gate = EventTimeGate(venues, settings.tick_ms, self._on_tick)
        else:
            self.gate = DirectGate()
        symbols = sorted({s.binance_symbol for s in specs})
        self.binance = BinanceClient(settings, symbols, gate=self.gate, on_end=self._venue_ended)
        self.poly = PolymarketClient(settings, now_ms=self.gate.now_ms, gate=self.gate, on_end=self._venue_ended)
        for s in specs:
            self.poly.add_market(s)
        self.publisher = Publisher(
            settings.redis_url,
            settings.stream_max_age_s,
            step_ms=settings.tick_ms,
            future_tolerance_ms=settings.stream_future_tolerance_ms,
            trim_every_s=settings.stream_trim_every_s,
        )
        self.gaps = GapMonitor(int(settings.alert_gap_s * 1000), episodes(settings.redis_url))
        self.active: set[str] = set(self.specs) if not use_leases else set()
        self._rebuild()
        self.started = time.monotonic()
        self.ticks = 0
        self.first_tick: int | None = None
        self.last_tick: int | None = None

    # ------------------------------------------------------------------ ticks
    def _rebuild(self) -> None:
        sides = [
            MarketSides(
                name,
                self.binance.symbols[self.specs[name].binance_symbol],
                self.poly.markets[name],
            )
            for name in sorted(self.active)
        ]
        old = getattr(self, "builder", None)
        self.builder = StateBuilder(
            sides, self.settings.stale_binance_ms, self.settings.stale_poly_ms, self.settings.tick_ms
        )
        if old is not None:  # the replay check counts over the whole run
            self.builder.n_poly_states, self.builder.n_poly_empty = old.n_poly_states, old.n_poly_empty

    def _on_tick(self, tick_ms: int) -> None:
        t0 = time.perf_counter()
        entries = self.builder.build_entries(tick_ms)
        self.publisher.enqueue(entries)
        self.gaps.on_tick(tick_ms, self.builder.last_flags)
        TICK_SECONDS.observe(time.perf_counter() - t0)
        TICKS.inc()
        self.ticks += 1
        self.first_tick = self.first_tick or tick_ms
        self.last_tick = tick_ms

    async def _wall_ticks(self) -> None:
        step = self.settings.tick_ms
        next_tick = grid_ceil(int(time.time() * 1000) + 1, step)
        while not self._stop.is_set():
            delay = next_tick / 1000 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = int(time.time() * 1000)
            if now - next_tick > step:  # we are late by more than a tick: skip, don't build from newer data
                missed = (now - next_tick) // step
                TICKS_MISSED.inc(missed)
                next_tick += missed * step
            self._on_tick(next_tick)
            next_tick += step

    async def _event_poll(self) -> None:
        assert isinstance(self.gate, EventTimeGate)
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
            self.gate.poll()

    def _venue_ended(self, venue: str) -> None:
        """A replay's feed closed with 'end of data'."""
        self._ended.add(venue)
        self.gate.venue_ended(venue)
        if isinstance(self.gate, EventTimeGate) and self._ended >= self.gate.venues_seen:
            # every venue that sent data has ended: emit the last ticks and stop
            self.gate.flush()
            self.stop()

    async def _leases(self) -> None:
        from common.streams import connect
        from observer_svc.leases import LeaseManager

        r = connect(self.settings.redis_url)
        lm = LeaseManager(r, self.observer_id, list(self.specs), self.settings.replicas,
                          int(self.settings.lease_ttl_s * 1000))  # fmt: skip
        try:
            while not self._stop.is_set():
                held = await asyncio.to_thread(lm.renew)
                if held != self.active:
                    kv(log, logging.INFO, "leases changed", held=sorted(held))
                    self.active = held
                    self._rebuild()
                await asyncio.sleep(self.settings.lease_ttl_s / 4)
        finally:
            await asyncio.to_thread(lm.release_all)
            r.close()

    async def _presence(self) -> None:
        """Beat this observer's presence (observer_svc.presence) until it stops; Redis errors are logged once
        and never stop the observer."""
        from common.streams import connect
        from observer_svc import presence

        r = connect(self.settings.redis_url)
        started = int(time.time() * 1000)
        try:
            while not self._stop.is_set():
                mode = "leases" if self.use_leases else "fixed"
                what = presence.report(sorted(self.active), mode, self.ticks, self.last_tick, self.publisher.added,
                                       self.publisher.errors, started)  # fmt: skip
                try:
                    await asyncio.to_thread(presence.beat, r, self.observer_id, what, int(time.time() * 1000))
                except (redis.RedisError, OSError) as e:
                    log_once(log, f"presence:{type(e).__name__}", "presence beat failed", error=type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), presence.BEAT_S)
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                await asyncio.to_thread(presence.leave, r, self.observer_id)
            r.close()

    # ------------------------------------------------------------------ run
    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> None:
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.binance.run(), name="binance"),
            asyncio.create_task(self.poly.run(), name="polymarket"),
            asyncio.create_task(self.publisher.run(), name="publisher"),
            asyncio.create_task(self._event_poll() if self.event_clock else self._wall_ticks(), name="ticks"),
        ]
        tasks.append(asyncio.create_task(self._presence(), name="presence"))
        if self.use_leases:
            tasks.append(asyncio.create_task(self._leases(), name="leases"))
        kv(log, logging.INFO, "observer started", markets=sorted(self.specs), clock="event" if self.event_clock
           else "wall", urls=self.settings.venue_urls())  # fmt: skip
        try:
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration_s)
            else:
                await self._stop.wait()
        finally:
            self._stop.set()
            for t in tasks[:2] + tasks[3:]:
                t.cancel()
            await self.binance.close()
            await self.poly.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publisher.drained(), 10)
            tasks[2].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.publisher.close()

    def summary(self) -> dict[str, Any]:
        return {
            "markets": sorted(self.active),
            "ticks": self.ticks,
            "states_added": self.publisher.added,
            "duplicates_refused": self.publisher.duplicates,
            "publish_errors": self.publisher.errors,
            "first_tick_ms": self.first_tick,
            "last_tick_ms": self.last_tick,
            "poly_states_empty": f"{self.builder.n_poly_empty}/{self.builder.n_poly_states}",
        }

    def replay_problem(self, max_empty: float = 0.5) -> str | None:
        """Event-clock feeds (sim, replay): why the run produced nothing usable, else None. A replay
        that published no state, or whose states mostly lack a Polymarket market or book (rows that
        never reached the observer, or a recording in another timezone than its windows), is an error."""
        if not self.event_clock:
            return None
        if self.publisher.added == 0:
            return (f"replay delivered nothing: {self.ticks} ticks, no state published (venues ended: "
                    f"{sorted(self._ended) or 'none'}); is the sim serving data for {sorted(self.specs)}?")  # fmt: skip
        n, empty = self.builder.n_poly_states, self.builder.n_poly_empty
        if n and empty / n > max_empty:
            return (f"replay states mostly empty: {empty} of {n} ({100 * empty / n:.0f} %) have no Polymarket "
                    f"market or book; the Polymarket rows did not reach the observer or do not overlap the "
                    f"Binance data (timezone or alignment: see `fusion sim recorded --help`)")  # fmt: skip
        return None

    def summary_text(self) -> str:
        s = self.summary()
        return " ".join(f"{k}={v}" for k, v in s.items())
