"""Publishes encoded states to Redis Streams in pipelines (async, batched).

``enqueue`` never blocks the tick; a background task drains everything queued into one
non-transactional pipeline of ``XADD stream <tick_ms>-0 d <msgpack>``. An ID refused because
another replica already published that tick is counted as a duplicate (that is the
de-duplication mechanism, not an error). A Redis outage is retried with backoff and the queued
entries are kept (bounded: oldest dropped and counted beyond ``max_queue``). Streams are
trimmed by age (``XTRIM MINID ~``) at most once a minute.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time

import redis
import redis.asyncio as aioredis

from common import metrics
from common.keys import MARKETS_SET, PAYLOAD_FIELD
from common.log import kv
from common.schema import tick_of_entry_id

log = logging.getLogger("observer.publisher")

STATES_OUT = metrics.counter("fusion_observer_states_published", "states added to streams", ("market",))
DUPLICATES = metrics.counter("fusion_observer_duplicates_refused", "state IDs refused (another replica)", ("market",))
PUBLISH_ERRORS = metrics.counter("fusion_observer_publish_errors", "XADD errors other than duplicates", ("market",))
DROPPED = metrics.counter("fusion_observer_states_dropped", "states dropped from a full publish queue")


def _market_of(stream: str) -> str:
    return stream.split("{", 1)[1].split("}", 1)[0]


class Publisher:
    def __init__(self, redis_url: str, max_age_s: int, max_queue: int = 200_000, batch: int = 5_000) -> None:
        self._r = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.max_age_s = max_age_s
        self.max_queue = max_queue
        self.batch = batch
        self._q: collections.deque[tuple[str, str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_trim = 0.0
        self._newest_tick = 0
        self._known_markets: set[str] = set()
        self.added = 0
        self.duplicates = 0
        self.errors = 0

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
        return len(self._q)

    async def drained(self) -> None:
        """Wait until everything enqueued so far has been sent."""
        await self._idle.wait()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            if not self._q:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            chunk = [self._q.popleft() for _ in range(min(self.batch, len(self._q)))]
            try:
                await self._send(chunk)
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self._q.extendleft(reversed(chunk))
                kv(log, logging.WARNING, "redis unavailable, retrying", error=str(e), backlog=len(self._q))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)

    async def _send(self, chunk: list[tuple[str, str, bytes]]) -> None:
        pipe = self._r.pipeline(transaction=False)
        new_markets = []
        for stream, eid, payload in chunk:
            pipe.xadd(stream, {PAYLOAD_FIELD: payload}, id=eid)
        for stream, _, _ in chunk:
            m = _market_of(stream)
            if m not in self._known_markets:
                self._known_markets.add(m)
                new_markets.append(m)
        if new_markets:
            pipe.sadd(MARKETS_SET, *new_markets)
        results = await pipe.execute(raise_on_error=False)
        for (stream, _, _), out in zip(chunk, results, strict=False):
            m = _market_of(stream)
            if isinstance(out, Exception):
                if isinstance(out, (redis.ConnectionError, redis.TimeoutError)):
                    raise out
                if "equal or smaller" in str(out):
                    self.duplicates += 1
                    DUPLICATES.labels(m).inc()
                else:
                    self.errors += 1
                    PUBLISH_ERRORS.labels(m).inc()
                    kv(log, logging.ERROR, "xadd failed", stream=stream, error=str(out))
            else:
                self.added += 1
                STATES_OUT.labels(m).inc()
        self._newest_tick = max(self._newest_tick, tick_of_entry_id(chunk[-1][1]))
        now = time.monotonic()
        if now - self._last_trim > 60:
            self._last_trim = now
            min_id = max(0, self._newest_tick - self.max_age_s * 1000)
            pipe = self._r.pipeline(transaction=False)
            for stream in {s for s, _, _ in chunk}:
                pipe.xtrim(stream, minid=f"{min_id}-0", approximate=True)
            await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        await self._r.aclose()
