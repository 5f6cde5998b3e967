"""How buffered windows leave the archiver (a mixin of :class:`archiver_svc.service.Archiver`: the attributes it
uses are the archiver's): closable windows go to the writer threads, finished writes are collected, and only the
entries of a stored object are acked.

Guarantees: a window is submitted once the group has delivered past ``window end + grace`` (or with
``force``, ``--final``), never while the store backs off (:class:`archiver_svc.store_backoff.StoreBackoff`); a
failed write puts its entries back in the buffer (still pending, retried later) and no entry is acked before the
object holding it is stored; acks are pipelined; trade windows mark their day for a summary
(:mod:`archiver_svc.summary`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import redis

from archiver_svc.store_backoff import StoreBackoff
from archiver_svc.summary import DaySummaries
from archiver_svc.window_writer import Job, WindowWriter
from archiver_svc.windows import object_key
from common import keys
from common.metrics import counter

ENTRIES = counter("fusion_archiver_entries_archived_total", "entries stored and acked", ("kind",))
OBJECTS = counter("fusion_archiver_objects_written_total", "window objects written", ("kind", "result"))
WRITE_ERRORS = counter("fusion_archiver_write_errors_total", "failed object writes (retried)", ("kind",))


class _Tally(Protocol):
    archived: int
    objects: dict[str, int]
    errors: int


class WriteAck:
    """Submit closable windows, collect the writes, ack what is stored, summarise closed trade days."""

    r: redis.Redis
    streams: dict[str, tuple[str, str]]
    buffers: dict[str, dict[int, dict[str, bytes]]]
    delivered_ms: dict[str, int]
    window_ms: int
    grace_ms: int
    store_backoff: StoreBackoff
    inflight: list[tuple[Job, Future[Job]]]
    to_ack: list[Job]
    writer: WindowWriter
    summaries: DaySummaries
    stats: _Tally
    _pool: ThreadPoolExecutor

    def _submit_closable(self, force: bool) -> None:
        if not force and self.store_backoff.waiting():  # the store is down: back off
            return
        for s, wins in self.buffers.items():
            market, kind = self.streams[s]
            delivered = self.delivered_ms.get(s, -1)
            for ws in sorted(wins):
                if not force and ws + self.window_ms + self.grace_ms > delivered:
                    break
                entries = wins.pop(ws)
                if entries:
                    job = Job(s, market, kind, ws, entries)
                    self.inflight.append((job, self._pool.submit(self.writer.write, job)))

    def _collect(self, wait: bool) -> None:
        still: list[tuple[Job, Future[Job]]] = []
        failed: tuple[Job, Exception] | None = None
        for job, fut in self.inflight:
            if not wait and not fut.done():
                still.append((job, fut))
                continue
            try:
                fut.result()
            except Exception as e:  # store/lock failure: keep the entries buffered (pending), retry later
                WRITE_ERRORS.labels(job.kind).inc()
                self.stats.errors += 1
                failed = failed or (job, e)
                win = self.buffers.setdefault(job.stream, {}).setdefault(job.window_start_ms, {})
                win.update(job.entries)
                continue
            self.to_ack.append(job)
        self.inflight = still
        if failed is not None:
            first, err = failed
            self.store_backoff.failed(object_key(first.kind, first.market, first.window_start_ms), err)
        elif self.to_ack:
            self.store_backoff.recovered()

    def _ack_done(self) -> None:
        if not self.to_ack:
            return
        pipe = self.r.pipeline(transaction=False)
        for job in self.to_ack:
            ids = list(job.entries)
            for i in range(0, len(ids), 5000):
                pipe.xack(job.stream, keys.ARCHIVER_GROUP, *ids[i : i + 5000])
        pipe.execute()
        for job in self.to_ack:
            if job.kind == "trades":
                self.summaries.touch(job.market, job.window_start_ms)
            ENTRIES.labels(job.kind).inc(len(job.entries))
            OBJECTS.labels(job.kind, job.result).inc()
            self.stats.archived += len(job.entries)
            self.stats.objects[job.result] = self.stats.objects.get(job.result, 0) + 1
        self.to_ack = []

    def _summarize(self, force: bool) -> None:
        """Daily trade summaries of closed days (:mod:`archiver_svc.summary`)."""
        if self.summaries.touched:
            self.summaries.flush(lambda t: self.delivered_ms.get(keys.trades_stream(t), -1), force=force)
