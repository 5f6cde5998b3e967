"""Redis Streams helpers shared by the services.

* :func:`publish_states` XADDs many entries with explicit IDs in one pipeline; an ID that is not
  above the stream's top (another replica published that tick already) is *refused by Redis* and
  counted as a duplicate, never raised: that is how replicas de-duplicate.
* :func:`trim_by_age` bounds a stream with ``XTRIM MINID ~`` so memory stays flat 24/7, but never below
  what a consumer group still needs; the one trim function of the system (observer, labeler, CLI).
* :func:`ensure_group` creates a consumer group (and the stream) idempotently; :func:`ensure_groups`
  creates every group a stream's consumers use (:func:`groups_of`), at ID 0, before its first entry.
* :func:`repair_forged_top` (:mod:`common.repair`) parks and removes entries XADDed ahead of the tick grid.
* :func:`scan_streams` never returns a stream whose market name is outside :mod:`common.names`' grammar
  (e.g. ``fusion:{BTC-5M/.}:states``): such a stream is counted and logged once (name quoted), then ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from common import metrics
from common.keys import LABELS_GROUPS, PAYLOAD_FIELD, STATES_GROUPS, TRADES_GROUPS, market_of_stream
from common.log import kv, log_once
from common.repair import RepairResult, repair_forged_top

__all__ = [
    "PublishResult",
    "RepairResult",
    "TrimStatus",
    "connect",
    "ensure_group",
    "ensure_groups",
    "groups_of",
    "publish_states",
    "repair_forged_top",
    "scan_streams",
    "trim_by_age",
]

log = logging.getLogger("fusion.streams")
IGNORED = metrics.counter("fusion_streams_ignored_total", "streams ignored: market name outside the grammar", ("kind",))


def connect(url: str, socket_timeout: float = 30.0) -> redis.Redis:
    """A client with sane timeouts and health checks (bytes responses)."""
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=5.0, health_check_interval=30
    )


@dataclass(slots=True)
class PublishResult:
    added: int = 0
    duplicates: int = 0
    errors: int = 0


def _is_duplicate(err: Exception) -> bool:
    return isinstance(err, redis.ResponseError) and "equal or smaller" in str(err)


def publish_states(r: redis.Redis, entries: Sequence[tuple[str, str, bytes]]) -> PublishResult:
    """XADD ``(stream, entry_id, payload)`` entries in one non-transactional pipeline."""
    res = PublishResult()
    if not entries:
        return res
    pipe = r.pipeline(transaction=False)
    for stream, eid, payload in entries:
        pipe.xadd(stream, {PAYLOAD_FIELD: payload}, id=eid)
    for out in pipe.execute(raise_on_error=False):
        if isinstance(out, Exception):
            if _is_duplicate(out):
                res.duplicates += 1
            else:
                res.errors += 1
        else:
            res.added += 1
    return res


def ensure_group(r: redis.Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create ``group`` on ``stream`` (MKSTREAM); False when it already existed."""
    try:
        r.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except redis.ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise


def groups_of(stream: str) -> tuple[str, ...]:
    """The consumer groups that read ``stream`` (states: archiver + labeler; labels, trades: archiver)."""
    parsed = market_of_stream(stream)
    if parsed is None:
        return ()
    return {"states": STATES_GROUPS, "labels": LABELS_GROUPS, "trades": TRADES_GROUPS}[parsed[1]]


def ensure_groups(r: redis.Redis, stream: str) -> None:
    """Create every group of :func:`groups_of` at ID 0 (and the stream), so that trimming waits for a
    consumer from the stream's first entry even if it has never started."""
    for g in groups_of(stream):
        ensure_group(r, stream, g, "0")


def scan_streams(r: redis.Redis, kind: str) -> list[str]:
    """Every ``fusion:{M}:<kind>`` stream that exists (kind = states | labels | trades) whose ``M`` follows the name
    grammar; any other is ignored, counted (``fusion_streams_ignored_total``, once per stream and process)
    and logged once (the log formatters quote control characters)."""
    out = []
    for k in r.scan_iter(match=f"fusion:{{*}}:{kind}", count=1000, _type="stream"):
        s = k.decode(errors="replace") if isinstance(k, bytes) else k
        if market_of_stream(s) is not None:
            out.append(s)
        elif log_once(log, f"badstream:{s}", "stream ignored: market name outside the grammar", stream=s[:200]):
            IGNORED.labels(kind).inc()
    return sorted(out)


# ---------------------------------------------------------------------------------------------- trimming

TRIM_HELD_S = metrics.gauge(
    "fusion_stream_trim_held_back_seconds",
    "how much older than the age setting a stream's oldest entry is, because a consumer group has not "
    "acknowledged (pending) or read it; 0 when trimming follows the age setting",
    ("stream",),
)
STREAM_LENGTH = metrics.gauge("fusion_stream_length_entries", "entries in a stream after trimming", ("stream",))

# KEYS: stream. ARGV: age cutoff ms, dry ('1': compute only). MINID = min(cutoff, per group: oldest pending ID,
# last-delivered-id + 1). Returns {trimmed, holding group or '', MINID, oldest entry ms or -1, length}.
_SAFE_TRIM = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local bms, bseq, holder = tonumber(ARGV[1]), 0, ''
local cutoff = bms
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local ms, seq = parse(f['last-delivered-id'])
  seq = seq + 1
  if ms < bms or (ms == bms and seq < bseq) then bms, bseq, holder = ms, seq, f['name'] end
  if tonumber(f['pending']) > 0 then
    local p = redis.call('XPENDING', KEYS[1], f['name'])
    local pms, pseq = parse(p[2])
    if pms < bms or (pms == bms and pseq < bseq) then bms, bseq, holder = pms, pseq, f['name'] end
  end
end
local minid = string.format('%d-%d', bms, bseq)
local trimmed = 0
if ARGV[2] ~= '1' then trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '~', minid) end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = -1
if #first > 0 then oldest = parse(first[1][1]) end
return {trimmed, holder, minid, oldest, redis.call('XLEN', KEYS[1])}
"""


@dataclass(frozen=True, slots=True)
class TrimStatus:
    """Outcome of trimming one stream. ``held_by`` names the consumer group whose oldest unacknowledged or
    unread entry keeps the stream longer than the age setting (None: trimming follows the age setting)."""

    stream: str
    trimmed: int
    min_id: str
    cutoff_ms: int
    oldest_ms: int | None
    held_by: str | None
    length: int = 0

    @property
    def held_back_s(self) -> float:
        if self.held_by is None or self.oldest_ms is None:
            return 0.0
        return max(0.0, (self.cutoff_ms - self.oldest_ms) / 1000)


_held: dict[str, str | None] = {}  # stream -> holding group, as last reported (log on change)


def trim_by_age(
    r: redis.Redis, streams: Sequence[str], now_ms: int, max_age_s: int, dry: bool = False
) -> list[TrimStatus]:
    """Approximate-trim every stream to entries newer than ``now_ms - max_age_s``, but never an entry a consumer
    group of the stream has not acknowledged (its oldest pending ID) or not read (its last-delivered-id + 1).

    Atomic per stream (Lua). When a group holds trimming back the stream grows: that is reported, on change,
    as a WARNING log line, and always by the ``fusion_stream_trim_held_back_*`` gauges and the returned
    statuses (``fusion streams info`` shows them). ``dry`` computes the statuses without trimming."""
    if not streams:
        return []
    cutoff = max(0, now_ms - max_age_s * 1000)
    script = r.register_script(_SAFE_TRIM)  # cheap (a local sha1); EVALSHA, loaded on first use
    pipe = r.pipeline(transaction=False)
    for s in streams:
        script(keys=[s], args=[cutoff, 1 if dry else 0], client=pipe)
    out: list[TrimStatus] = []
    for s, res in zip(streams, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(res, Exception):  # no such stream (yet), or not a stream: nothing to trim
            continue
        trimmed, holder, min_id, oldest, length = res
        first = None if int(oldest) < 0 else int(oldest)
        group = (_text(holder) or None) if first is not None and first < cutoff else None
        st = TrimStatus(s, int(trimmed), _text(min_id), cutoff, first, group, int(length))
        out.append(st)
        if dry:
            continue
        TRIM_HELD_S.labels(s).set(st.held_back_s)
        STREAM_LENGTH.labels(s).set(st.length)
        if _held.get(s) != group:
            _held[s] = group
            if group is not None:
                kv(log, logging.WARNING, "trimming held back by a consumer group that has not acknowledged or read "
                   "old entries: the stream grows beyond its age setting", stream=s, group=group,
                   held_back_s=round(st.held_back_s, 1), length=st.length, min_id=st.min_id)  # fmt: skip
            else:
                kv(log, logging.INFO, "trimming follows the age setting again", stream=s, length=st.length)
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
