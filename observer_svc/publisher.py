"""Publishes encoded states to Redis Streams in pipelines (async, batched).

``enqueue`` never blocks the tick; a background task drains everything queued into one
non-transactional pipeline of contiguous XADDs (``<tick_ms>-0 d <msgpack>``, a small Lua script
per entry). An ID that another replica already published is counted as a duplicate (that is the
de-duplication mechanism, not an error). A tick more than one step ahead of the stream's top (this
replica is ahead of a slower one, e.g. just restarted) is held until the slower replica fills the
ticks in between, or forced after ``gap_wait_s`` when no replica has them, so replicas that run
at different speeds never leave a gap. A Redis outage is retried with backoff and the queued
entries are kept (bounded: oldest dropped and counted beyond ``max_queue``).

Guarantees added for hostile input and slow consumers:

* A stream's consumer groups (``archiver``, ``labeler``) are created at ID 0 before its first entry, and
  trimming (every ``trim_every_s``, :func:`common.streams.trim_by_age`) never removes an entry a group has
  not acknowledged or read.
* Every XADD also raises ``keys.published_tick_key(market)``, the grid's authority. A stream top more than
  ``future_tolerance_ms`` above it (an entry no observer published, e.g. a forged future ID) is parked,
  deleted and the stream and its groups are set back (:func:`common.streams.repair_forged_top`); then
  publishing resumes. Counted in ``fusion_observer_forged_entries_total``.
* A tick that can no longer be published (below the top but not in the stream: something within the
  tolerance got there first) is counted as LOST (``fusion_observer_ticks_lost_total``) and logged, never
  as a duplicate; a duplicate is a tick whose ID is in the stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from common import metrics
from common.deadletter import DeadLetters
from common.keys import MARKETS_SET, published_tick_key
from common.log import kv
from common.schema import tick_of_entry_id
from common.streams import connect, ensure_groups, repair_forged_top, trim_by_age

log = logging.getLogger("observer.publisher")

STATES_OUT = metrics.counter("fusion_observer_states_published", "states added to streams", ("market",))
DUPLICATES = metrics.counter("fusion_observer_duplicates_refused", "state IDs refused (another replica)", ("market",))
PUBLISH_ERRORS = metrics.counter("fusion_observer_publish_errors", "XADD errors other than duplicates", ("market",))
DROPPED = metrics.counter("fusion_observer_states_dropped", "states dropped from a full publish queue")
GAP_HOLDS = metrics.counter("fusion_observer_gap_holds", "times a stream's next tick waited for a slower replica",
                            ("market",))  # fmt: skip
LOST = metrics.counter("fusion_observer_ticks_lost_total", "ticks that could not be published: below the stream's "
                       "top and not in the stream", ("market",))  # fmt: skip
FORGED = metrics.counter("fusion_observer_forged_entries_total", "entries found above the tick grid's authority + "
                         "tolerance, parked and removed", ("market",))  # fmt: skip

# XADD only if it keeps the stream contiguous: 1 added, 0 duplicate (the ID is in the stream: a replica was
# first), -1 would leave a gap (the top is more than one step behind: a slower replica still has those ticks;
# retry, or force later), -2 lost (below the top, not in the stream), -3 the top (or the stream's last ID) is
# above max(published tick, this tick) + tolerance: forged, repair first. KEYS: stream, published-tick key.
# ARGV: id, tick, step, force, payload, tolerance.
_XADD_CONTIGUOUS = """
local g = tonumber(ARGV[2])
local function forged(last)
  local auth = tonumber(redis.call('GET', KEYS[2]) or '0')
  if auth < g then auth = g end
  return last > auth + tonumber(ARGV[6])
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  local last = tonumber(string.match(top[1][1], '^(%d+)'))
  if last >= g then
    if forged(last) then return -3 end
    if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then return 0 end
    return -2
  end
  if ARGV[4] ~= '1' and last < g - tonumber(ARGV[3]) then return -1 end
end
local ok = redis.pcall('XADD', KEYS[1], ARGV[1], 'd', ARGV[5])
if type(ok) == 'table' and ok.err then
  if not string.find(ok.err, 'equal or smaller', 1, true) then return ok end
  -- the stream's last ID is above its top entry (entries were deleted): forged if far ahead, else lost
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and forged(tonumber(string.match(info[i + 1], '^(%d+)'))) then return -3 end
  end
  return -2
end
if g > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], g) end
return 1
"""


def _market_of(stream: str) -> str:
    return stream.split("{", 1)[1].split("}", 1)[0]


class Publisher:
    def __init__(
        self,
        redis_url: str,
        max_age_s: int,
        max_queue: int = 200_000,
        batch: int = 5_000,
        step_ms: int = 500,
        gap_wait_s: float = 3.0,
        future_tolerance_ms: int = 5_000,
        trim_every_s: float = 60.0,
    ) -> None:
        self._r = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self._sync = connect(redis_url, socket_timeout=10)  # rare paths (groups, trim, repair) on a thread
        self._dead = DeadLetters(self._sync, "observer")
        self.max_age_s = max_age_s
        self.future_tolerance_ms = future_tolerance_ms
        self.trim_every_s = trim_every_s
        self._grouped: set[str] = set()
        self.max_queue = max_queue
        self.batch = batch
        self._q: collections.deque[tuple[str, str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_trim = 0.0
        self._newest_tick = 0
        self._known_markets: set[str] = set()
        self.step_ms = step_ms
        self.gap_wait_s = gap_wait_s
        self._held: dict[str, collections.deque[tuple[str, bytes]]] = {}
        self._held_since: dict[str, float] = {}
        self._script: Any = None
        self.added = 0
        self.duplicates = 0
        self.errors = 0
        self.lost = 0
        self.forged = 0

    def enqueue(self, entries: list[tuple[str, str, bytes]]) -> None:
        self._q.extend(entries)
        while len(self._q) > self.max_queue:
            self._q.popleft()
            DROPPED.inc()
        if entries:
            self._idle.clear()
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._q) + self._held_count()

    async def drained(self) -> None:
        """Wait until everything enqueued so far has been sent."""
        await self._idle.wait()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            if not self._q and not self._held_count():
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            elif not self._q:
                # only held (gap-waiting) entries: retry them shortly
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)
            chunk = [self._q.popleft() for _ in range(min(self.batch, len(self._q)))]
            for stream, eid, payload in chunk:
                self._held.setdefault(stream, collections.deque()).append((eid, payload))
            try:
                await self._send()
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                kv(log, logging.WARNING, "redis unavailable, retrying", error=str(e), backlog=self.backlog)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)

    def _held_count(self) -> int:
        return sum(len(d) for d in self._held.values())

    async def _send(self) -> None:
        """One pipeline of contiguous XADDs over every stream's pending entries (in ID order).

        Per stream, entries are sent until the first that would leave a gap (another replica is
        behind and still has those ticks); that one and its successors are held and retried. A
        stream whose gap does not close within ``gap_wait_s`` (no replica has those ticks) is forced."""
        if self._script is None:
            self._script = self._r.register_script(_XADD_CONTIGUOUS)
        now = time.monotonic()
        for stream in [s for s in self._held if s not in self._grouped]:
            await asyncio.to_thread(ensure_groups, self._sync, stream)  # before the stream's first entry
            self._grouped.add(stream)
        pipe = self._r.pipeline(transaction=False)
        plan: list[tuple[str, int]] = []
        budget = self.batch
        for stream, held in self._held.items():
            if not held or budget <= 0:
                continue
            since = self._held_since.get(stream)
            force = since is not None and now - since > self.gap_wait_s
            n = min(len(held), budget)
            budget -= n
            for i in range(n):
                eid, payload = held[i]
                tick = eid.split("-", 1)[0]
                await self._script(keys=[stream, published_tick_key(_market_of(stream))],
                                   args=[eid, tick, self.step_ms, 1 if force and i == 0 else 0, payload,
                                         self.future_tolerance_ms], client=pipe)  # fmt: skip
            plan.append((stream, n))
        new_markets = [m for m in {_market_of(st) for st, _ in plan} if m not in self._known_markets]
        if new_markets:
            self._known_markets.update(new_markets)
            pipe.sadd(MARKETS_SET, *new_markets)
        results = await pipe.execute(raise_on_error=False)
        k = 0
        repair: list[tuple[str, int]] = []
        for stream, n in plan:
            held = self._held[stream]
            m = _market_of(stream)
            outs = results[k : k + n]
            k += n
            done = 0
            lost: list[int] = []
            for out in outs:
                if isinstance(out, (redis.ConnectionError, redis.TimeoutError)):
                    raise out
                if isinstance(out, Exception):
                    self.errors += 1
                    PUBLISH_ERRORS.labels(m).inc()
                    kv(log, logging.ERROR, "xadd failed", stream=stream, error=str(out))
                elif out == -1:
                    break
                elif out == -3:
                    repair.append((stream, tick_of_entry_id(held[done][0])))
                    break
                elif out == -2:
                    lost.append(tick_of_entry_id(held[done][0]))
                elif out == 0:
                    self.duplicates += 1
                    DUPLICATES.labels(m).inc()
                else:
                    self.added += 1
                    STATES_OUT.labels(m).inc()
                done += 1
            if lost:
                self.lost += len(lost)
                LOST.labels(m).inc(len(lost))
                kv(log, logging.WARNING, "ticks LOST: below the stream's top and not in it (something within the "
                   "future tolerance was there first)", stream=stream, lost=len(lost), first=lost[0],
                   last=lost[-1])  # fmt: skip
            if done:
                self._newest_tick = max(self._newest_tick, tick_of_entry_id(held[done - 1][0]))
            for _ in range(done):
                held.popleft()
            if done < n and not (repair and repair[-1][0] == stream):
                if stream not in self._held_since:
                    self._held_since[stream] = now
                    GAP_HOLDS.labels(m).inc()
            elif done == n:
                self._held_since.pop(stream, None)
        for stream, tick in repair:
            res = await asyncio.to_thread(
                repair_forged_top, self._sync, stream, tick, self.future_tolerance_ms, self._dead
            )
            self.forged += res.deleted
            FORGED.labels(_market_of(stream)).inc(res.deleted)
        if self._q or self._held_count():
            self._idle.clear()
        if now - self._last_trim >= self.trim_every_s and self._newest_tick:
            self._last_trim = now
            await asyncio.to_thread(trim_by_age, self._sync, list(self._held), self._newest_tick, self.max_age_s)

    async def close(self) -> None:
        await self._r.aclose()
        self._sync.close()
