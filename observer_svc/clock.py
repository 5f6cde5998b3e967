"""Tick clocks: the wall-clock grid (live) and the event-time gate (replays, simulations).

:class:`EventTimeGate` makes replays deterministic. Venue clients hand it every parsed frame as
``submit(venue, event_ms, apply)`` instead of applying it. It applies frames of all venues in
event-time order and, before applying a frame with event time ``e``, emits every grid tick
``g < e`` not yet emitted. So the state of tick ``g`` holds exactly the events with time ``<= g``,
whatever the interleaving of the sockets. A frame is released once every active venue has a
frame queued; a venue that has sent nothing for ``stall_s`` (wall time) stops holding the others
back until it speaks again, and a venue whose replay ended is removed.

:class:`DirectGate` (live) applies frames at once; the tick loop runs on the wall-clock grid.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Apply = Callable[[], None]
OnTick = Callable[[int], None]


def grid_ceil(t_ms: int, tick_ms: int) -> int:
    """Smallest grid point >= t_ms."""
    return -(-t_ms // tick_ms) * tick_ms


class DirectGate:
    """Applies frames immediately; remembers the newest event time per venue."""

    def __init__(self) -> None:
        self.last_event_ms: dict[str, int] = {}

    def submit(self, venue: str, event_ms: int | None, apply: Apply) -> None:
        apply()
        if event_ms is not None and event_ms > self.last_event_ms.get(venue, 0):
            self.last_event_ms[venue] = event_ms

    def venue_ended(self, venue: str) -> None:
        pass

    def now_ms(self) -> int:
        return int(time.time() * 1000)


@dataclass(order=True, slots=True)
class _Item:
    event_ms: int
    rank: int
    seq: int
    apply: Apply = field(compare=False)


class EventTimeGate:
    """Merges venues' frames by event time and emits ticks on the event-time grid."""

    def __init__(
        self,
        venues: list[str],
        tick_ms: int,
        on_tick: OnTick,
        stall_s: float = 2.0,
        start_ms: int | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tick_ms = tick_ms
        self.on_tick = on_tick
        self.stall_s = stall_s
        self._wall = wall
        self._rank = {v: i for i, v in enumerate(venues)}
        self._active: set[str] = set(venues)
        self._queued: dict[str, int] = {v: 0 for v in venues}
        self._last_seen: dict[str, float] = {v: wall() for v in venues}
        self._venue_time: dict[str, int] = {}
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self.next_tick: int | None = grid_ceil(start_ms, tick_ms) if start_ms is not None else None
        self.applied_ms: int | None = None  # event time of the newest applied frame
        self.ticks_emitted = 0

    # -- venue side
    def submit(self, venue: str, event_ms: int | None, apply: Apply) -> None:
        prev = self._venue_time.get(venue)
        if event_ms is None:
            if prev is None and self.applied_ms is None:
                apply()  # no time known yet (e.g. a frame without an event time first): nothing to order
                return
            event_ms = prev if prev is not None else self.applied_ms
            assert event_ms is not None
        elif prev is not None and event_ms < prev:
            event_ms = prev  # a venue's own frames never go back in time
        self._venue_time[venue] = event_ms
        self._active.add(venue)
        self._queued[venue] = self._queued.get(venue, 0) + 1
        self._last_seen[venue] = self._wall()
        heapq.heappush(
            self._heap, _Item(event_ms, self._rank.setdefault(venue, len(self._rank)), next(self._seq), apply)
        )
        self._drain()

    def venue_ended(self, venue: str) -> None:
        """The venue's replay is over: it no longer holds the others back."""
        self._active.discard(venue)
        self._drain()

    def poll(self) -> None:
        """Re-check stalled venues (call periodically)."""
        self._drain()

    @property
    def venues_seen(self) -> set[str]:
        """Venues that have submitted at least one timed frame."""
        return set(self._venue_time)

    def now_ms(self) -> int:
        """Event-time "now": the newest applied frame's time (0 before any)."""
        return self.applied_ms or max(self._venue_time.values(), default=0)

    # -- merge
    def _blocked(self) -> bool:
        now = self._wall()
        for v in self._active:
            if self._queued.get(v, 0) == 0 and now - self._last_seen.get(v, now) < self.stall_s:
                return True
        return False

    def _drain(self) -> None:
        rank_to_venue = {r: v for v, r in self._rank.items()}
        while self._heap and not self._blocked():
            item = heapq.heappop(self._heap)
            venue = rank_to_venue[item.rank]
            self._queued[venue] -= 1
            self._emit_ticks_before(item.event_ms)
            item.apply()
            if self.applied_ms is None or item.event_ms > self.applied_ms:
                self.applied_ms = item.event_ms

    def _emit_ticks_before(self, event_ms: int) -> None:
        if self.next_tick is None:
            self.next_tick = grid_ceil(event_ms, self.tick_ms)
        while self.next_tick < event_ms:
            self.on_tick(self.next_tick)
            self.ticks_emitted += 1
            self.next_tick += self.tick_ms

    def flush(self) -> None:
        """Apply everything queued (end of a replay) and emit the ticks up to the last event."""
        self._active.clear()
        self._drain()
        if self.applied_ms is not None:
            self._emit_ticks_before(self.applied_ms + 1)
