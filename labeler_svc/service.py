"""The labeler service: consumer group ``labeler`` on every ``fusion:{M}:states`` stream.

Guarantees:

* Each state gets exactly one label on ``fusion:{M}:labels``, with the state's entry ID, in ID
  order, computed by :func:`labeler_svc.labels.label_rows` (the batch labeller's function) once
  it is final (:func:`labeler_svc.labels.ready_mask`: future arrived, or known missing/stale, or
  the settlement known or waited for ``label_settle_wait_s``).
* A state is acked only with its label: one Lua script XADDs the labels and XACKs their states
  atomically (:mod:`labeler_svc.writer`, on a thread, while the next batch is decoded). An XADD
  refused by Redis (ID not above the top: written before a crash) counts as a duplicate and is
  acked, so after any crash the service neither relabels nor skips.
* On start (and after losing Redis) it re-reads its pending entries (ID 0) first, then new ones;
  pending states are exactly the unlabelled ones, so the in-memory window is rebuilt from them.
* Bad entries go to the dead-letter stream (stream, id, reason, payload) and are acked.
* Memory per market is bounded by the longest horizon + the settlement wait + one read batch.
* An entry above the published tick grid (``keys.published_tick_key`` + ``stream_future_tolerance_ms``: no
  observer XADDed it, e.g. a forged future ID) is held aside, never labelled nor used as a future, until the
  observer has repaired the stream (:mod:`labeler_svc.ahead`, :mod:`common.repair`); an entry deleted from
  the stream (nil fields in the pending list) is acknowledged and counted. Neither stalls the market.

One labeler process per Redis (the group's consumer name is fixed; pending entries of other
consumers are claimed on start).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from common import keys
from common.deadletter import DeadLetters
from common.log import kv, log_once
from common.metrics import counter, gauge
from common.schema import N_RAW, StateColumns
from common.settings import Settings
from common.streams import connect, ensure_group, ensure_groups, scan_streams, trim_by_age
from labeler_svc import ahead
from labeler_svc.decode import decode_states_bulk
from labeler_svc.labels import label_rows, ready_prefix
from labeler_svc.wire import encode_label_rows
from labeler_svc.writer import LABELS_DUP, LabelWriter

log = logging.getLogger("labeler")

STATES_READ = counter("fusion_labeler_states_total", "state entries read", ("market",))
LABELS_INVALID = counter("fusion_labeler_invalid_total", "invalid label horizons written", ("market", "horizon"))
DEAD = counter("fusion_labeler_deadletter_total", "bad state entries parked", ("market",))
ERRORS = counter("fusion_labeler_errors_total", "Redis errors (retried)", ("kind",))
DROPPED = counter("fusion_labeler_deleted_entries_total", "pending entries deleted from the stream, acked", ("market",))
HELD_AHEAD = gauge("fusion_labeler_held_ahead", "entries held aside: above the published tick grid", ("market",))
BUFFERED = gauge("fusion_labeler_buffered_states", "states held waiting for their future", ("market",))


@dataclass(slots=True)
class _Market:
    """One market's states not labelled yet, in tick order (the oldest is the next to label)."""

    name: str
    states_key: str
    labels_key: str
    tick: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    raw: np.ndarray = field(default_factory=lambda: np.zeros((0, N_RAW), dtype=np.float64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    cursor: bytes = b"0"  # b"0": draining our pending entries; b">": new entries
    dirty: bool = False
    last_trim: float = 0.0
    ahead: dict[bytes, Any] = field(default_factory=dict)  # entries above the published grid: id -> fields

    @property
    def newest(self) -> int:
        return int(self.tick[-1]) if self.tick.size else -1

    def columns(self) -> StateColumns:
        return StateColumns(self.tick, self.raw, np.zeros((self.tick.size, 0), np.float32), self.flags)

    def append(self, tick: np.ndarray, raw: np.ndarray, flags: np.ndarray) -> None:
        self.tick = np.concatenate([self.tick, tick])
        self.raw = np.concatenate([self.raw, raw])
        self.flags = np.concatenate([self.flags, flags])
        self.dirty = True

    def drop(self, n: int) -> None:
        self.tick, self.raw, self.flags = self.tick[n:], self.raw[n:], self.flags[n:]

    def reset(self) -> None:
        self.drop(self.tick.size)
        self.cursor = b"0"
        self.ahead.clear()


@dataclass(slots=True)
class StepStats:
    read: int = 0
    labelled: int = 0
    duplicates: int = 0
    dead: int = 0
    idle: bool = False  # a read of new entries returned none


class _WriterFailed(RuntimeError):
    pass


class LabelerService:
    """Reads states, writes labels. ``run()`` loops until :meth:`stop`; ``run(once=True)`` drains and returns."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str = "labeler-1",
        batch: int = 10_000,
        block_ms: int = 500,
        scan_every_s: float = 5.0,
        write_chunk: int = 5_000,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.scan_every_s = scan_every_s
        self.write_chunk = write_chunk
        self.horizons = tuple(int(h) for h in settings.label_horizons_s)
        self.settle_wait_ms = int(settings.label_settle_wait_s) * 1000
        self.future_tolerance_ms = int(settings.stream_future_tolerance_ms)
        self.markets: dict[str, _Market] = {}  # by states stream key
        self.r: redis.Redis = connect(settings.redis_url)
        self._reader: redis.Redis = connect(settings.redis_url)  # XREADGROUP replies left as hiredis parsed them
        self._reader.set_response_callback("XREADGROUP", lambda resp, **kw: resp)
        self.writer = LabelWriter(connect(settings.redis_url))
        self.dead_letters = DeadLetters(self.r, "labeler")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-reader")
        self._prefetch: Future[Any] | None = None
        self._stop = False
        self._last_scan = 0.0
        self._read = self._late = self._dead = 0

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        if self._drop_prefetch():
            self._reset()
        self._pool.shutdown()
        self.writer.close()
        self.writer.r.close()
        self._reader.close()
        self.r.close()

    def run(self, once: bool = False) -> int:
        """Label until stopped (or, with ``once``, until no entry is left to read: 0, or 1 on a Redis error)."""
        backoff = 0.2
        while not self._stop:
            try:
                st = self.step(block_ms=0 if once else self.block_ms)
                if once and st.idle:
                    self.writer.flush()
                    self._check_writer()
                    break
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, _WriterFailed) as e:
                ERRORS.labels(type(e).__name__).inc()
                kv(log, logging.WARNING, "redis write/read failed; re-reading pending entries", error=str(e))
                self._reset()
                if once:
                    return 1
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if self._drop_prefetch():  # delivered but not labelled: rebuild from the pending entries next time
            self._reset()
        self.writer.flush()
        return 0

    def _reset(self) -> None:
        """Restart semantics in-process: drop the in-memory window, re-read the pending entries."""
        self._drop_prefetch()
        self.writer.reset()
        for m in self.markets.values():
            m.reset()

    def _check_writer(self) -> None:
        if self.writer.error is not None:
            raise _WriterFailed(str(self.writer.error))

    @property
    def totals(self) -> StepStats:
        w = self.writer.totals
        with w.lock:
            return StepStats(self._read, w.labelled, w.duplicates + self._late, self._dead)

    # ------------------------------------------------------------------ one iteration
    def discover(self) -> None:
        """Pick up new states streams: create the group at 0, claim other consumers' pending entries."""
        for s in scan_streams(self.r, "states"):
            if s in self.markets:
                continue
            parsed = keys.market_of_stream(s)
            if parsed is None:
                continue
            ensure_group(self.r, s, keys.LABELER_GROUP, "0")
            try:  # the archiver's group on the labels stream, before the first label (so trimming waits for it)
                ensure_groups(self.r, keys.labels_stream(parsed[0]))
            except redis.ResponseError as e:  # not a stream: the label writes fail and are retried
                log_once(log, f"labels-group:{parsed[0]}", "cannot create the labels stream's groups", error=str(e))
            self._claim(s)
            self.markets[s] = _Market(parsed[0], s, keys.labels_stream(parsed[0]))
            kv(log, logging.INFO, "labelling market", market=parsed[0], stream=s)

    def _claim(self, stream: str) -> None:
        start: Any = "0-0"
        while True:
            res = self.r.xautoclaim(stream, keys.LABELER_GROUP, self.consumer, 0, start_id=start, count=1000)
            start = res[0]
            if start in (b"0-0", "0-0"):
                break

    def step(self, block_ms: int = 0) -> StepStats:
        """One read (pending entries first, then new ones), then every final label handed to the writer."""
        self._check_writer()
        st = StepStats()
        now = time.monotonic()
        if now - self._last_scan >= self.scan_every_s or not self.markets:
            self.discover()
            self._last_scan = now
        if self._prefetch is not None:  # new entries read while the previous batch was labelled
            fut, self._prefetch = self._prefetch, None
            resp, draining = fut.result(), {}
        else:
            draining = {k: m.cursor for k, m in self.markets.items() if m.cursor != b">"}
            if draining:
                names = list(draining)
                args = self._xread_args(["STREAMS", *names, *draining.values()])
            elif self.markets:
                args = self._xread_args(self._steady_streams(block_ms))
            else:
                if block_ms:
                    time.sleep(block_ms / 1000)
                st.idle = True
                return st
            resp = self._xread(args)
        got: dict[str, list[Any]] = {}
        for name, entries in resp.items() if isinstance(resp, dict) else resp:  # RESP3 map or RESP2 pairs
            got[name.decode() if isinstance(name, bytes) else name] = entries or []
        if not draining and not any(got.values()):
            st.idle = True
        elif not self._stop and all(m.cursor == b">" for m in self.markets.values()):
            self._prefetch = self._pool.submit(self._xread, self._xread_args(self._steady_streams(block_ms)))
        for k in draining:
            entries = got.get(k) or []
            self.markets[k].cursor = bytes(entries[-1][0]) if entries else b">"
        for m in self.markets.values():
            if m.ahead:  # held above the grid: acknowledge those the observer's repair deleted
                self._ack_gone(m, ahead.recheck(self.r, m.states_key, m.ahead))
        for k, entries in got.items():
            if entries and k in self.markets:
                self._ingest(self.markets[k], entries, st)
        for m in self.markets.values():
            if m.dirty:
                self._emit(m, st)
            BUFFERED.labels(m.name).set(m.tick.size)
            HELD_AHEAD.labels(m.name).set(len(m.ahead))
            if now - m.last_trim >= self.settings.stream_trim_every_s and m.newest > 0:
                trim_by_age(self.r, [m.labels_key], m.newest, self.settings.stream_max_age_s)
                m.last_trim = now
        self._read += st.read
        self._dead += st.dead
        self._late += st.duplicates
        return st

    def _xread_args(self, tail: list[Any]) -> list[Any]:
        return ["XREADGROUP", "GROUP", keys.LABELER_GROUP, self.consumer, "COUNT", self.batch, *tail]

    def _steady_streams(self, block_ms: int) -> list[Any]:
        names = list(self.markets)
        return (["BLOCK", block_ms] if block_ms else []) + ["STREAMS", *names, *([">"] * len(names))]

    def _xread(self, args: list[Any]) -> Any:
        return self._reader.execute_command(*args) or []

    def _drop_prefetch(self) -> bool:
        """Forget a read in flight; True when it may have delivered entries (they stay pending)."""
        fut, self._prefetch = self._prefetch, None
        if fut is None:
            return False
        try:
            resp = fut.result(timeout=60)
        except Exception:  # the read failed: nothing delivered, or re-read anyway
            return True
        return bool(resp)

    # ------------------------------------------------------------------ ingest
    def _ack_gone(self, m: _Market, gone: list[bytes]) -> None:
        if gone:
            self.r.xack(m.states_key, keys.LABELER_GROUP, *gone)
            DROPPED.labels(m.name).inc(len(gone))
            log_once(log, f"deleted:{m.name}", "pending entries deleted from the stream acknowledged",
                     market=m.name, first=gone[0].decode(errors="replace"))  # fmt: skip

    def _ingest(self, m: _Market, entries: list[Any], st: StepStats) -> None:
        entries, gone = ahead.screen(self.r, m.name, m.states_key, m.newest, m.ahead, entries, self.future_tolerance_ms)
        self._ack_gone(m, gone)
        if not entries:
            return
        st.read += len(entries)
        STATES_READ.labels(m.name).inc(len(entries))
        ids: list[bytes] = [e[0] for e in entries]
        pf = keys.PAYLOAD_FIELD
        payloads: list[Any] = [f[1] if f is not None and len(f) == 2 and f[0] == pf else None for _, f in entries]
        dead: list[tuple[int, str]] = []
        if None in payloads:
            present = [i for i, p in enumerate(payloads) if p is not None]
            dead += [(i, "entry lacks payload field 'd'") for i, p in enumerate(payloads) if p is None]
        else:
            present = list(range(len(payloads)))
        whole = len(present) == len(payloads)
        # one validator (common.validate) for schema, market, tick = entry ID and values
        tick, raw, flags, bad = decode_states_bulk(
            payloads if whole else [payloads[i] for i in present], m.name, ids if whole else [ids[i] for i in present]
        )
        bad_set = {present[i] for i, _ in bad}
        dead += [(present[i], reason) for i, reason in bad]
        good = [i for i in present if i not in bad_set] if bad_set else present
        # entry IDs only grow, so a tick at or below the newest one is a redelivery
        old = tick <= m.newest
        late = [ids[good[j]] for j in np.flatnonzero(old & ~np.isin(tick, m.tick))]
        keep = ~old
        if dead:
            self._dead_letter(m, [(ids[i], reason, payloads[i]) for i, reason in sorted(dead)], st)
        if late:
            self.r.xack(m.states_key, keys.LABELER_GROUP, *late)
            st.duplicates += len(late)
            LABELS_DUP.labels(m.name).inc(len(late))
        if keep.any():
            if keep.all():
                m.append(tick, raw, flags)
            else:
                m.append(tick[keep], raw[keep], flags[keep])

    def _dead_letter(self, m: _Market, items: list[tuple[bytes, str, Any]], st: StepStats) -> None:
        """Park each bad entry once across services (DeadLetters) and ack it, atomically."""
        pipe = self.r.pipeline(transaction=True)
        for eid, reason, payload in items:
            log_once(log, f"dead:{m.name}:{reason[:60]}", "bad state entry parked", market=m.name, reason=reason)
            body = payload if isinstance(payload, bytes) else b""
            self.dead_letters.park(m.states_key, eid, reason, body, pipe=pipe)
        pipe.xack(m.states_key, keys.LABELER_GROUP, *[eid for eid, _, _ in items])
        pipe.execute()
        st.dead += len(items)
        DEAD.labels(m.name).inc(len(items))

    # ------------------------------------------------------------------ emit
    def _emit(self, m: _Market, st: StepStats) -> None:
        m.dirty = False
        cols = m.columns()
        n = ready_prefix(cols, self.horizons, newest_tick_ms=m.newest, settle_wait_ms=self.settle_wait_ms)
        if n == 0:
            return
        s = self.settings
        lc = label_rows(
            cols,
            n,
            self.horizons,
            tolerance_ms=s.label_tolerance_ms,
            fee_rate=s.taker_fee_rate,
            fee_exponent=s.taker_fee_exponent,
            settle_wait_ms=self.settle_wait_ms,
        )
        payloads = encode_label_rows(m.name, lc)
        ids = [b"%d-0" % t for t in lc.tick_ms.tolist()]
        for k, h in enumerate(self.horizons):
            bad = int(n - int(lc.valid[:, k].sum()))
            if bad:
                LABELS_INVALID.labels(m.name, str(h)).inc(bad)
        for a in range(0, n, self.write_chunk):
            b = min(a + self.write_chunk, n)
            self.writer.put(m.name, m.labels_key, m.states_key, ids[a:b], payloads[a:b])
        st.labelled += n
        m.drop(n)
