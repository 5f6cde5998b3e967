"""What enters the archiver's window buffers (a mixin of :class:`archiver_svc.service.Archiver`: the attributes it
uses are the archiver's).

Guarantees: a delivered batch is validated in bulk (:func:`common.validate.check_payloads`: schema, market, tick =
entry ID, values); each unusable entry is parked once across services (:class:`common.deadletter.DeadLetters`) and
acked in one pipeline, never buffered; the valid ones are buffered by window (``id_ms - id_ms % window_ms``). A
pending entry deleted from the stream is acked and counted; buffered entries above the group's cursor (it was set
back) are forgotten and acked, so they are delivered again if they still exist.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Protocol

import numpy as np
import redis

from archiver_svc.redis_replies import as_str as _s
from archiver_svc.redis_replies import payload_of
from archiver_svc.windows import parse_ids
from common import keys
from common.deadletter import DeadLetters
from common.log import kv, log_once
from common.metrics import counter
from common.validate import check_payloads

log = logging.getLogger("archiver")

DEAD = counter("fusion_archiver_dead_lettered_total", "entries moved to the dead-letter stream", ("kind",))
DELETED = counter("fusion_archiver_deleted_entries_total", "pending entries deleted from the stream, acked", ("kind",))


class _Counts(Protocol):
    dead: int


class Intake:
    """Validation, dead-lettering and buffering by window of delivered entries."""

    r: redis.Redis
    streams: dict[str, tuple[str, str]]
    buffers: dict[str, dict[int, dict[str, bytes]]]
    buffered_top_ms: dict[str, int]
    window_ms: int
    dead_letters: DeadLetters
    stats: _Counts

    def _ingest(self, stream: str, entries: list[Any]) -> int:
        """Validate a batch in bulk (template matrix), dead-letter the bad, buffer the rest by window."""
        market, kind = self.streams[stream]
        pf = keys.PAYLOAD_FIELD
        if any(e is None or e[0] is None for e in entries):
            entries = [e for e in entries if e is not None and e[0] is not None]
        if any(not e[1] for e in entries):
            entries = self._ack_deleted(stream, kind, entries)
        n = len(entries)
        if not n:
            return 0
        eids: list[bytes] = [e[0] for e in entries]
        # raw reply: [field, value]; parsed (XAUTOCLAIM): dict; deleted: None / empty
        payloads: list[Any] = [
            f[1] if type(f) is list and len(f) == 2 and f[0] == pf else payload_of(f, pf) for _, f in entries
        ]
        dead: list[tuple[int, bytes, str, bytes]] = []  # (position in the batch, id, reason, payload)
        pos: list[int] | range = range(n)
        if None in payloads:
            for i, p in enumerate(payloads):
                if p is None:
                    f = entries[i][1]
                    why = (
                        "entry deleted from the stream before it was archived" if not f else f"no {pf.decode()!r} field"
                    )
                    dead.append((i, eids[i], why, b""))
            pos = [i for i, p in enumerate(payloads) if p is not None]
            eids, payloads = [eids[i] for i in pos], [payloads[i] for i in pos]
        bad = check_payloads(market, kind, eids, payloads)
        if bad:
            dead += [(pos[i], eids[i], why, payloads[i] if isinstance(payloads[i], bytes) else b"") for i, why in bad]
            drop = {i for i, _ in bad}
            keep = [i for i in range(len(eids)) if i not in drop]
            eids, payloads = [eids[i] for i in keep], [payloads[i] for i in keep]
        if dead:
            dead.sort(key=lambda d: d[0])  # stream order
        if eids:
            self._buffer(stream, eids, payloads)
        if dead:
            self._dead_letter(stream, kind, [d[1:] for d in dead])
        return n

    def _buffer(self, stream: str, eids: list[bytes], payloads: list[bytes]) -> None:
        """Put valid entries into their windows' buffers (runs of one window at a time)."""
        buf = self.buffers.setdefault(stream, {})
        sids = [e.decode() for e in eids]
        parsed = parse_ids(sids)
        w = self.window_ms
        ws = parsed[:, 0] - parsed[:, 0] % w
        self.buffered_top_ms[stream] = max(self.buffered_top_ms.get(stream, -1), int(parsed[:, 0].max()))
        cuts = np.flatnonzero(ws[1:] != ws[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(sids)]
        for a, b in itertools.pairwise(bounds):
            start = int(ws[a])
            win = buf.get(start)
            if win is None:
                win = buf[start] = {}
            win.update(zip(sids[a:b], payloads[a:b], strict=True))

    def _ack_deleted(self, stream: str, kind: str, entries: list[Any]) -> list[Any]:
        """Acknowledge pending entries deleted from the stream (nil fields); returns the others."""
        gone = [e[0] for e in entries if not e[1]]
        self.r.xack(stream, keys.ARCHIVER_GROUP, *gone)
        DELETED.labels(kind).inc(len(gone))
        log_once(log, f"deleted:{stream}", "pending entries deleted from the stream acknowledged", stream=stream,
                 first=_s(gone[0]))  # fmt: skip
        return [e for e in entries if e[1]]

    def _forget_above(self, stream: str, cursor_ms: int) -> None:
        """Forget and ack buffered entries above the group's cursor: it was set back (the observer's repair of a
        forged future entry, or an operator's XGROUP SETID); those that still exist are delivered again."""
        wins = self.buffers.get(stream, {})
        gone: list[str] = []
        for ws in [w for w in wins if w + self.window_ms > cursor_ms]:
            win = wins[ws]
            above = [e for e in win if int(e.partition("-")[0]) > cursor_ms]
            for e in above:
                del win[e]
            gone += above
            if not win:
                del wins[ws]
        self.buffered_top_ms[stream] = max((max(int(e.partition("-")[0]) for e in w) for w in wins.values() if w),
                                           default=-1)  # fmt: skip
        if gone:
            self.r.xack(stream, keys.ARCHIVER_GROUP, *gone)
            DELETED.labels(self.streams[stream][1]).inc(len(gone))
            kv(log, logging.WARNING, "group cursor set back: buffered entries above it forgotten", stream=stream,
               cursor_ms=cursor_ms, entries=len(gone), first=gone[0])  # fmt: skip

    def _dead_letter(self, stream: str, kind: str, dead: list[tuple[bytes, str, bytes]]) -> None:
        """Park each bad entry once (unless another service parked it) and ack it, in one pipeline."""
        pipe = self.r.pipeline(transaction=False)
        for eid, reason, payload in dead:
            log_once(log, f"dead:{stream}:{reason[:40]}", "entry dead-lettered", stream=stream, id=eid, reason=reason)
            self.dead_letters.park(stream, eid, reason, payload, pipe=pipe)
        pipe.xack(stream, keys.ARCHIVER_GROUP, *[d[0] for d in dead])
        pipe.execute()
        DEAD.labels(kind).inc(len(dead))
        self.stats.dead += len(dead)
