"""The archiver: consumer group ``archiver`` on every states/labels/trades stream -> one object per window.

Flow per stream: XREADGROUP (big COUNT) -> validate (template fast path, full schema decode
otherwise; undecodable -> dead-letter stream + XACK) -> buffer per window -> once the group has
delivered past ``window end + grace`` the window's object is written by a writer thread
(``put_if_absent``; if the key exists: under a Redis lock, read it, union by entry ID, rewrite when
different) -> only then XACK its entries (pipelined).

Guarantees:
* An entry is acked only after an object holding it is durably stored: a crash at any point
  leaves it pending, and on start the archiver re-reads its own pending entries (ID 0); entries
  of a dead archiver are taken over with XAUTOCLAIM after ``claim_idle_ms``. Buffered entries are
  re-claimed (XCLAIM JUSTID) every ``claim_idle_ms / 3`` so a live archiver's long windows are
  never stolen.
* Window keys and bytes are deterministic and objects are only ever created atomically or
  replaced by a superset (merge under a lock), so an entry is in the archive exactly once.
* Redis errors (restart, failover) are retried with backoff; nothing is lost or acked early.
* Store errors (S3 down, bucket missing) back off exponentially with jitter up to ``store_retry_max_s``;
  one log line when the store goes down, one every ``store_down_log_every_s`` while it stays down, one when
  it recovers; the entries stay pending until their object is written.
* Entries the system cannot use (:func:`common.validate.check_payloads`: schema, market, tick = entry ID,
  values) are parked once across services (:class:`common.deadletter.DeadLetters`) and acked, never
  archived; a stored object's unusable entries are quarantined and never merged back.
* An unfinished window is never written unless ``final=True`` (``--final``).
* An entry deleted from the stream while pending (the observer's repair of a forged future entry, which
  parks it first) is acknowledged and counted; buffered entries above the group's cursor (delivered before
  the cursor was set back) are forgotten and acknowledged, so a forged entry never holds a window open
  nor reaches the archive (those that still exist are delivered again).

This module is the consumer loop (read, recover, claim, cursor). The rest, one concern each:
:mod:`archiver_svc.intake` (validate, dead-letter, buffer by window), :mod:`archiver_svc.write_ack` (submit closable
windows to the writers, collect the writes, ack), :mod:`archiver_svc.window_writer` (create or merge one window's
object), :mod:`archiver_svc.merge_lock` (the per-window Redis lock), :mod:`archiver_svc.read_ahead` (the next
XREADGROUP on its own thread), :mod:`archiver_svc.store_backoff` (store outages), :mod:`archiver_svc.redis_replies`
(pure reply helpers).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.typing import KeyT, StreamIdT

from archiver_svc.intake import DELETED, Intake
from archiver_svc.merge_lock import LockTimeout, WindowLock
from archiver_svc.read_ahead import ReadAhead
from archiver_svc.redis_replies import REDIS_ERRORS, entries_of, stream_replies
from archiver_svc.redis_replies import as_str as _s
from archiver_svc.store_backoff import STORE_DOWN, StoreBackoff
from archiver_svc.summary import DaySummaries
from archiver_svc.window_writer import Job, WindowWriter
from archiver_svc.write_ack import WriteAck
from common import keys
from common.deadletter import DeadLetters
from common.log import kv, log_once
from common.metrics import gauge
from common.store import ObjectStore
from common.streams import ensure_group, scan_streams

log = logging.getLogger("archiver")

LAG = gauge("fusion_archiver_lag_entries", "entries of a stream not yet archived (undelivered + pending)", ("stream",))

__all__ = ["Archiver", "Job", "LockTimeout", "REDIS_ERRORS", "STORE_DOWN", "Stats"]


@dataclass(slots=True)
class Stats:
    archived: int = 0
    dead: int = 0
    objects: dict[str, int] = field(default_factory=dict)
    claimed: int = 0
    errors: int = 0


class Archiver(Intake, WriteAck):
    """One archiver consumer. ``run()`` loops until :meth:`stop`; ``step()`` does one round."""

    stats: Stats

    def __init__(
        self,
        r: redis.Redis,
        store: ObjectStore,
        *,
        consumer: str,
        window_s: int = 600,
        grace_s: int = 30,
        claim_idle_ms: int = 60_000,
        count: int = 5000,
        block_ms: int = 1000,
        scan_every_s: float = 5.0,
        lock_ttl_ms: int = 30_000,
        writers: int = 2,
        store_retry_base_s: float = 0.5,
        store_retry_max_s: float = 30.0,
        store_down_log_every_s: float = 300.0,
    ) -> None:
        self.r = r
        self.store = store
        self.consumer = consumer
        self.window_ms = window_s * 1000
        self.grace_ms = grace_s * 1000
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.block_ms = block_ms
        self.scan_every_s = scan_every_s
        self.lock_ttl_ms = lock_ttl_ms
        self.streams: dict[str, tuple[str, str]] = {}  # stream -> (market, kind)
        self.dead_letters = DeadLetters(r, "archiver")
        self.store_backoff = StoreBackoff(store_retry_base_s, store_retry_max_s, store_down_log_every_s)
        self.buffers: dict[str, dict[int, dict[str, bytes]]] = {}
        self.delivered_ms: dict[str, int] = {}
        self.buffered_top_ms: dict[str, int] = {}  # newest buffered entry per stream (never above the group cursor)
        self.need_pending: set[str] = set()
        self.inflight: list[tuple[Job, Future[Job]]] = []
        self.to_ack: list[Job] = []
        self.stats = Stats()
        self._stop = threading.Event()
        # writers run gzip + store puts (both release the GIL) in parallel; jobs of one window may
        # overlap safely: creation is atomic and merges hold the window's lock
        self._pool = ThreadPoolExecutor(max(1, writers), thread_name_prefix="archive-writer")
        self.read_ahead = ReadAhead()  # the next XREADGROUP runs while this batch is validated and buffered
        self.writer = WindowWriter(store, WindowLock(r, consumer, lock_ttl_ms), self.window_ms)
        # raw XREADGROUP replies (no per-entry dict): nested lists of bytes
        self._raw = redis.Redis(connection_pool=r.connection_pool)
        self._raw.set_response_callback("XREADGROUP", lambda resp, **_: resp)
        self._next_scan = self._next_claim = self._next_heartbeat = 0.0
        self.summaries = DaySummaries(store, self.window_ms, self.grace_ms)  # trades: daily performance

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to stop after the current step (a write in progress completes and is acked)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, once: bool = False, final: bool = False) -> Stats:
        """Loop until stopped (or, with ``once``, until caught up); ``final`` also writes open windows."""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                got = self.step(block=not once)
                backoff = 0.2
                if once and not got and not self.need_pending and not self.inflight and not self.to_ack:
                    break
            except REDIS_ERRORS as e:
                self._on_redis_error(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                log_once(log, "nogroup", "consumer group vanished; re-creating", error=str(e))
                self._drop_prefetch()
                self.streams.clear()
                self._next_scan = 0.0
        self.close(final=final)
        return self.stats

    def close(self, final: bool = False) -> None:
        """Finish in-flight writes and ack them; with ``final`` first write every open window."""
        for attempt in range(20):
            try:
                if self.read_ahead.pending:  # entries it delivered are ours: buffer them (or re-read later)
                    self._ingest_reply(self.read_ahead.take())
                if final:
                    self._submit_closable(force=True)
                self._collect(wait=True)
                self._ack_done()
                self._summarize(force=final)
                break
            except REDIS_ERRORS as e:
                self._on_redis_error(e)
                time.sleep(min(0.2 * 2**attempt, 5.0))
        self._drop_prefetch()
        self.read_ahead.shutdown()
        self._pool.shutdown(wait=True)

    def _on_redis_error(self, e: Exception) -> None:
        self._drop_prefetch()
        self.stats.errors += 1
        kv(log, logging.WARNING, "redis unavailable; retrying", error=f"{type(e).__name__}: {e}")
        # a reply lost mid-flight leaves delivered-but-unseen entries in our PEL: re-read it
        self.need_pending = set(self.streams)
        self._next_claim = 0.0

    # ------------------------------------------------------------------ one round
    def step(self, block: bool = True) -> int:
        """Discover, recover, read, write closable windows, ack. Returns entries received."""
        now = time.monotonic()
        if now >= self._next_scan:
            self.discover()
            self._next_scan = now + self.scan_every_s
        got = 0
        for s in sorted(self.need_pending):
            got += self._read_pending(s)
            self.need_pending.discard(s)
        if now >= self._next_claim:
            got += self._autoclaim()
            self._next_claim = now + min(self.claim_idle_ms / 2000, 10.0)
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.claim_idle_ms / 3000
        if self.inflight and not got:
            # writes in flight and nothing recovered: let the writer work instead of polling Redis
            concurrent.futures.wait([f for _, f in self.inflight], timeout=0.05, return_when="FIRST_COMPLETED")
            block_ms = None
        else:
            block_ms = self.block_ms if block and not got else None
        new = self._read_new(block_ms)
        got += new
        if got or not self.delivered_ms or not block_ms:
            # before the next read is issued: the group cursor never covers entries not buffered yet
            self._update_delivered()
        if new and not self.need_pending and not self._stop.is_set():
            self.read_ahead.submit(self._xread_new, list(self.streams), None)
        self._submit_closable(force=False)
        self._collect(wait=False)
        self._ack_done()
        self._summarize(force=False)
        return got

    def discover(self) -> None:
        for kind in keys.STREAM_KINDS:  # trades: a trader's records, same windows and rules
            for s in scan_streams(self.r, kind):
                if s in self.streams:
                    continue
                parsed = keys.market_of_stream(s)
                if parsed is None:
                    continue
                ensure_group(self.r, s, keys.ARCHIVER_GROUP, "0")
                self.streams[s] = parsed
                self.need_pending.add(s)
                kv(log, logging.INFO, "archiving stream", stream=s)

    # ------------------------------------------------------------------ reading
    def _read_pending(self, stream: str) -> int:
        """Re-read our own pending entries (after a start or a lost reply)."""
        last: bytes | str = "0"
        n = 0
        while True:
            resp = self._raw.xreadgroup(keys.ARCHIVER_GROUP, self.consumer, {stream: last}, count=self.count)
            entries = entries_of(resp, stream)
            if not entries:
                return n
            n += self._ingest(stream, entries)
            last = next((e for e, _ in reversed(entries) if e is not None), None) or last
            if len(entries) < self.count:
                return n

    def _read_new(self, block_ms: int | None) -> int:
        if self.read_ahead.pending:  # issued after the previous batch: its reply, without blocking again
            resp = self.read_ahead.take()
            n = self._ingest_reply(resp)
            if any(len(e or ()) >= self.count for _, e in stream_replies(resp)):
                return n
            # it reached the end of the streams back then: read what arrived since, as a plain step would
            return n + self._ingest_reply(self._xread_new(list(self.streams), None if n else block_ms))
        if not self.streams:
            if block_ms:
                self._stop.wait(block_ms / 1000)
            return 0
        return self._ingest_reply(self._xread_new(list(self.streams), block_ms))

    def _xread_new(self, streams: list[str], block_ms: int | None) -> Any:
        """XREADGROUP ``>`` on ``streams`` (a copy: may run on the reader thread)."""
        ids: dict[KeyT, StreamIdT] = dict.fromkeys(streams, ">")
        return self._raw.xreadgroup(keys.ARCHIVER_GROUP, self.consumer, ids, count=self.count, block=block_ms)

    def _ingest_reply(self, resp: Any) -> int:
        n = 0
        for name, entries in stream_replies(resp):
            if name in self.streams and entries:
                n += self._ingest(name, entries)
        return n

    def _drop_prefetch(self) -> None:
        """Forget a read in flight; whatever it delivered stays pending and is re-read (ID 0)."""
        if self.read_ahead.drop():
            self.need_pending = set(self.streams)

    def _autoclaim(self) -> int:
        """Take over entries idle for ``claim_idle_ms`` in any consumer's pending list."""
        n = 0
        for s in list(self.streams):
            start: bytes | str = "0-0"
            for _ in range(1000):
                res = self.r.xautoclaim(s, keys.ARCHIVER_GROUP, self.consumer, self.claim_idle_ms, start, self.count)
                nxt, entries = res[0], res[1]
                if entries:
                    got = self._ingest(s, entries)
                    n += got
                    self.stats.claimed += got
                if len(res) > 2 and res[2]:  # deleted entries: XAUTOCLAIM dropped them from the pending list
                    DELETED.labels(self.streams[s][1]).inc(len(res[2]))
                    log_once(log, f"claim-deleted:{s}", "pending entries deleted from the stream (an entry removed by "
                             "the observer's repair, or an XDEL) dropped", stream=s, first=_s(res[2][0]))  # fmt: skip
                if nxt in (b"0-0", "0-0"):
                    break
                start = nxt
        return n

    def _heartbeat(self) -> None:
        """Reset the idle time of every entry we hold (buffered or being written) so no one claims it."""
        held: dict[str, list[StreamIdT]] = {}
        for s, wins in self.buffers.items():
            for win in wins.values():
                held.setdefault(s, []).extend(win)
        for job, _ in self.inflight:
            held.setdefault(job.stream, []).extend(job.entries)
        if not held:
            return
        pipe = self.r.pipeline(transaction=False)
        for s, ids in held.items():
            for i in range(0, len(ids), 2000):
                pipe.xclaim(s, keys.ARCHIVER_GROUP, self.consumer, 0, ids[i : i + 2000], justid=True)
        pipe.execute()

    def _update_delivered(self) -> None:
        """Group cursor per stream (every entry up to it has been delivered to some consumer) + lag."""
        streams = list(self.streams)
        if not streams:
            return
        pipe = self.r.pipeline(transaction=False)
        for s in streams:
            pipe.xinfo_groups(s)
        for s, groups in zip(streams, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(groups, Exception):
                continue
            for g in groups:
                if _s(g.get("name")) != keys.ARCHIVER_GROUP:
                    continue
                last = _s(g.get("last-delivered-id") or "0-0")
                self.delivered_ms[s] = int(last.partition("-")[0])
                if self.buffered_top_ms.get(s, -1) > self.delivered_ms[s]:
                    self._forget_above(s, self.delivered_ms[s])
                lag = g.get("lag")
                LAG.labels(s).set((lag if isinstance(lag, int) else 0) + int(g.get("pending") or 0))
