"""The trader's memory in Redis and what it does on restart.

Guarantees:

* **state and record never disagree**: :meth:`Ledger.commit` XADDs a batch of records to ``fusion:{T}:trades``
  and writes the engine's state (:mod:`trader_svc.state`) to ``trader_state_key(trader)`` (a hash: ``seq``,
  ``d``) in one MULTI/EXEC, so either both are stored or neither (both keys carry the hash tag ``{trader}``: one
  Redis Cluster slot; a state under the untagged key of older versions is moved on load). A batch that fails
  (Redis down) stays pending, in order, and is written with the next successful commit; when the connection
  broke *during* EXEC, the stored ``seq`` tells whether it was applied, so no record is written twice.
* **restart**: :meth:`Ledger.load` restores the state from that key; when the key is missing (or
  unreadable: logged once, its bytes parked in the dead-letter stream) it rebuilds it from the trader's own
  records in ``fusion:{T}:trades`` (after those in the legacy global ``fusion:trades``, see
  :func:`trader_svc.state.rebuild`). ``source`` says which: ``redis``, ``trades`` or ``new``.
* **the record reaches the store**: the trade stream is created with the archiver's group at ID 0 and is never
  capped by length; :meth:`Ledger.trim` trims it by age but never below an entry the archiver has not
  acknowledged (:func:`common.streams.trim_by_age`), so every record is archived exactly once.
* **settlement across a restart**: :func:`settle_from_streams` settles a position whose window ended (the
  market's stream has a state past the window's end) from the recorded states of its market, read from the
  tick the position was opened at: the first state that knows the resolution of the position's window (its
  own ``pm_settle_up``, or ``pm_prev_settle_up`` with ``pm_prev_end_s`` = the window's end: the rule of
  :meth:`trader_svc.paper.PaperEngine.on_state`) settles it at that value, once (the settlement removes
  the position in the same committed state). When the stream no longer holds the position's history
  (trimmed: its first entry is after the open), the archived states of the market are searched the same way,
  from the open to ``ARCHIVE_LOOKUP_MS`` after the window's end. A position whose resolution is recorded
  nowhere yet stays open, is logged once and reported as ``awaiting_settlement``, and is looked up again.
* **cursors**: :func:`cursors_above_top` finds streams whose last generated ID is below the trader's read
  cursor (a forged entry deleted and the stream's ID set back, or a Redis that lost its data): the trader
  resumes from the real top instead of waiting for IDs that will never come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack

from common import keys
from common.deadletter import DeadLetters
from common.log import log_once
from common.schema import TRADE_VERSION, SchemaError, decode_state, tick_of_entry_id
from common.store import ObjectStore
from common.streams import ensure_groups, trim_by_age
from trader_svc import state
from trader_svc.paper import PaperEngine

log = logging.getLogger("trader")
EVENT_VERSION = TRADE_VERSION
SCAN_COUNT = 500
ARCHIVE_LOOKUP_MS = 3_600_000


def _id_key(eid: bytes | str) -> tuple[int, int]:
    s = eid.decode() if isinstance(eid, bytes) else eid
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


class Ledger:
    """Durable trader state + its trade records, committed together (see the module docstring)."""

    def __init__(self, r: Any, trader: str, trades_max_age_s: int) -> None:
        self.r, self.trader, self.max_age_s = r, trader, trades_max_age_s
        self.key = keys.trader_state_key(trader)
        self.stream = keys.trades_stream(trader)
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self._sent: tuple[int, int] | None = None  # (seq, n records) of an EXEC whose reply was lost

    def load(self, eng: PaperEngine) -> str:
        ensure_groups(self.r, self.stream)  # before the first record: trimming waits for the archiver
        h = self.r.hgetall(self.key)
        if not h:  # written before the key carried a hash tag: move it (copy first, then drop the old one)
            legacy = keys.legacy_trader_state_key(self.trader)
            h = self.r.hgetall(legacy)
            if h:
                self.r.pipeline(transaction=False).hset(self.key, mapping=h).delete(legacy).execute()
        if h.get(b"d"):
            try:
                state.load(eng, h[b"d"])
                self.seq = int(h.get(b"seq", 0))
                return "redis"
            except (ValueError, KeyError, TypeError) as e:
                reason = f"trader state unreadable: {type(e).__name__}: {e}"
                log_once(log, f"badstate:{self.trader}", "trader state unreadable; rebuilding it from the trade stream",
                         trader=self.trader, error=reason)  # fmt: skip
                DeadLetters(self.r, "trader").park(self.key, h.get(b"seq", b"0"), reason, h[b"d"])
        recs = self.own_records()
        if recs and state.rebuild(eng, recs):
            return "trades"
        return "new"

    def own_records(self) -> list[dict[str, Any]]:
        """This trader's records (legacy ``fusion:trades``, then its own stream), oldest first (undecodable
        ones skipped)."""
        return self._records(keys.TRADES_STREAM) + self._records(self.stream)

    def _records(self, stream: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = "-"
        while True:
            chunk = self.r.xrange(stream, min=start, count=2000)
            for _eid, f in chunk:
                try:
                    rec = msgpack.unpackb(f.get(keys.PAYLOAD_FIELD, b""), raw=False)
                except Exception as e:  # a damaged record: not ours to rebuild from, said once
                    log_once(log, f"badrecord:{self.trader}", "undecodable trade record skipped", error=str(e))
                    continue
                if isinstance(rec, dict) and rec.get("trader") == self.trader:
                    out.append(rec)
            if len(chunk) < 2000:
                return out
            start = "(" + chunk[-1][0].decode()

    def commit(self, eng: PaperEngine, recs: list[dict[str, Any]]) -> None:
        """Queue ``recs`` and write them with the current state (raises Redis errors; then they stay queued)."""
        for rec in recs:
            rec["v"], rec["trader"] = EVENT_VERSION, self.trader
        self.pending += recs
        self.flush(eng)

    def flush(self, eng: PaperEngine) -> None:
        if self._sent is not None:  # did the EXEC we lost the reply of happen?
            got = self.r.hget(self.key, "seq")
            seq, n = self._sent
            if got is not None and int(got) == seq:
                self.seq, self.pending = seq, self.pending[n:]
            self._sent = None
        seq = self.seq + 1
        pipe = self.r.pipeline(transaction=True)
        for rec in self.pending:
            payload = msgpack.packb(rec, use_bin_type=True)
            pipe.xadd(self.stream, {keys.PAYLOAD_FIELD: payload})
        pipe.hset(self.key, mapping={"seq": seq, "d": state.dump(eng)})
        self._sent = (seq, len(self.pending))
        pipe.execute()
        self.seq, self.pending, self._sent = seq, [], None

    def trim(self, now_ms: int) -> None:
        """Trim the trade stream to ``max_age_s``, never below what the archiver has not acknowledged."""
        trim_by_age(self.r, [self.stream], now_ms, self.max_age_s)

    @property
    def dirty(self) -> bool:
        return bool(self.pending) or self._sent is not None


@dataclass(slots=True)
class SettleScan:
    """Per open position, how far its market's stream has been searched for the resolution."""

    cursor: dict[tuple[str, int], str] = field(default_factory=dict)
    awaiting: dict[str, float] = field(default_factory=dict)  # market -> window end (s) still unresolved
    archived: set[tuple[str, int]] = field(default_factory=set)  # positions already looked up in the archive


def settle_from_archive(store: ObjectStore, eng: PaperEngine, market: str, before_ms: int) -> list[dict[str, Any]]:
    """Settle ``market``'s position from the archived states in [its open, ``before_ms``) (see the module doc)."""
    from archiver_svc.reader import load_market  # only this path needs the archive reader

    pos = eng.pos[market]
    to_ms = min(before_ms, int(pos.window_end_s * 1000) + ARCHIVE_LOOKUP_MS)
    md = load_market(store, market, pos.opened_tick, to_ms, labels=False, columns_cache=False, workers=1)
    for tick, raw in zip(md.states.tick_ms.tolist(), md.states.raw, strict=True):
        recs = eng.settle_recorded(market, int(tick), raw)
        if recs:
            for rec in recs:
                if rec["type"] == "fill":
                    rec["source"] = "archive"
            return recs
    return []


def settle_from_streams(
    r: Any, eng: PaperEngine, scan: SettleScan, budget: int = 5_000, grace_ms: int = 0, store: ObjectStore | None = None
) -> list[dict[str, Any]]:
    """Settle ended positions from recorded states (see the module docstring); reads at most ``budget``
    entries per call. ``grace_ms``: only positions whose window ended that long before the stream's top (the
    running trader leaves the resolution that arrives during the next window to its tick path). Returns the
    settlement records (to commit)."""
    out: list[dict[str, Any]] = []
    live = {(m, p.opened_tick) for m, p in eng.pos.items()}
    for k in [k for k in scan.cursor if k not in live]:
        del scan.cursor[k]
    scan.awaiting = {}
    for market, pos in list(eng.pos.items()):
        stream = keys.states_stream(market)
        end_ms = int(pos.window_end_s * 1000)
        top = r.xrevrange(stream, count=1)
        if not top or tick_of_entry_id(top[0][0]) < end_ms + grace_ms:
            continue  # the window is live (or nothing recorded): the tick path settles it
        k = (market, pos.opened_tick)
        start = scan.cursor.get(k, f"{pos.opened_tick}-0")
        read = 0
        while read < budget and market in eng.pos:
            chunk = r.xrange(stream, min=start, count=SCAN_COUNT)
            read += len(chunk)
            for eid, f in chunk:
                try:
                    s = decode_state(f.get(keys.PAYLOAD_FIELD, b""))
                except SchemaError:
                    continue  # the tick path parks bad entries; here they are only skipped
                if s.market != market or s.tick_ms != tick_of_entry_id(eid):
                    continue
                recs = eng.settle_recorded(market, s.tick_ms, s.raw)
                if recs:
                    for rec in recs:
                        if rec["type"] == "fill":
                            rec["source"] = "stream"
                    out += recs
                    break
            if len(chunk) < SCAN_COUNT:
                break
            start = "(" + chunk[-1][0].decode()
        if market in eng.pos and store is not None and k not in scan.archived:
            scan.archived.add(k)
            first = r.xrange(stream, count=1)
            first_ms = tick_of_entry_id(first[0][0]) if first else end_ms + ARCHIVE_LOOKUP_MS
            if first_ms > pos.opened_tick:  # the stream lost part of the position's history: the archive has it
                try:
                    out += settle_from_archive(store, eng, market, first_ms)
                except Exception as e:  # a store outage must not stop the trader; the stream is searched on
                    log_once(log, f"archive-settle:{market}", "archive lookup failed", market=market, error=str(e))
        if market in eng.pos:
            if chunk:
                scan.cursor[k] = "(" + chunk[-1][0].decode()
            scan.awaiting[market] = pos.window_end_s
            log_once(log, f"unsettled:{market}:{end_ms}", "position's window ended; resolution not recorded yet",
                     market=market, window_end_s=pos.window_end_s)  # fmt: skip
    return out


def cursors_above_top(r: Any, cursors: dict[str, bytes]) -> dict[str, bytes]:
    """Streams whose last generated ID is below the cursor, with that ID (``0-0`` for a missing stream)."""
    pipe = r.pipeline(transaction=False)
    names = list(cursors)
    for s in names:
        pipe.xinfo_stream(s)
    out: dict[str, bytes] = {}
    for s, info in zip(names, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(info, Exception):
            if "no such key" not in str(info).lower():
                log_once(log, f"xinfo:{s}", "stream top unreadable; cursor not checked", stream=s, error=str(info))
                continue
            top = b"0-0"
        else:
            top = info["last-generated-id"]
            top = top if isinstance(top, bytes) else str(top).encode()
        if _id_key(top) < _id_key(cursors[s]):
            out[s] = top
    return out
