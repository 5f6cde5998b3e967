"""Repair of a states stream whose top was forged ahead of the tick grid (an XADD that no observer made).

The observers are the one authority on a market's tick grid: every XADD they make also raises
``keys.published_tick_key(market)``. An entry more than ``tolerance_ms`` above ``max(that tick, the
caller's tick)`` was not published by any observer (a replica may be a little ahead: the tolerance).
Left alone it stalls the market for good: Redis refuses every later tick (IDs must grow) and the consumer
groups that read it have last-delivered-ids in the future, so they never read again.

:func:`repair_forged_top` guarantees, for entries above that bound:

* each is parked once in the dead-letter stream (:class:`common.deadletter.DeadLetters`) *before* it is
  deleted (a crash in between repeats the repair; parking is idempotent);
* one Lua script then, atomically, XDELs them, sets the stream's last ID back to its real top (XSETID, with
  the entries-added count corrected so group lag stays exact) and moves every consumer group whose
  last-delivered-id is past that top back to it (XGROUP SETID): the stream and both groups flow on.
  Consumers find the forged ID in their pending list as a deleted entry (nil fields) and acknowledge it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from common import keys
from common.deadletter import DeadLetters
from common.log import kv

log = logging.getLogger("streams.repair")

# KEYS: stream, published-tick key. ARGV: caller's tick ms, tolerance ms, entries deleted by earlier rounds,
# ids to delete (parked already). Only IDs above the bound are deleted. Returns {deleted, done (0: more entries
# above the bound, park them first), new top id, groups moved}.
_REPAIR = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function above(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams > bms or (ams == bms and aseq > bseq)
end
local auth = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > auth then auth = tonumber(ARGV[1]) end
local bound = auth + tonumber(ARGV[2])
local n = 0
for i = 4, #ARGV do
  local ms = parse(ARGV[i])
  if ms and ms > bound then n = n + redis.call('XDEL', KEYS[1], ARGV[i]) end
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 and parse(top[1][1]) > bound then return {n, 0, top[1][1], 0} end
local newtop = '0-1'
if #top > 0 then newtop = top[1][1] end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
local moved = 0
if above(f['last-generated-id'], newtop) then
  local added = tonumber(f['entries-added']) - n - tonumber(ARGV[3])
  if added < tonumber(f['length']) then added = tonumber(f['length']) end
  local maxdel = f['max-deleted-entry-id']
  if above(maxdel, newtop) then maxdel = '0-1' end
  redis.call('XSETID', KEYS[1], newtop, 'ENTRIESADDED', added, 'MAXDELETEDID', maxdel)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local gf = {}
    for i = 1, #g, 2 do gf[g[i]] = g[i + 1] end
    if above(gf['last-delivered-id'], newtop) then
      redis.call('XGROUP', 'SETID', KEYS[1], gf['name'], newtop, 'ENTRIESREAD', added)
      moved = moved + 1
    end
  end
end
return {n, 1, newtop, moved}
"""


@dataclass(slots=True)
class RepairResult:
    parked: int = 0  # entries parked by this call (0 for those another service parked first)
    deleted: int = 0
    new_top: str = ""
    groups_moved: int = 0


def repair_forged_top(
    r: redis.Redis, stream: str, tick_ms: int, tolerance_ms: int, dead: DeadLetters, batch: int = 500
) -> RepairResult:
    """Park and delete every entry of ``stream`` above ``max(published tick, tick_ms) + tolerance_ms``, set the
    stream's last ID back to its real top and move consumer groups past it back (see the module docstring)."""
    parsed = keys.market_of_stream(stream)
    if parsed is None or parsed[1] == "trades":
        raise ValueError(f"not a market stream: {stream!r}")
    marker = keys.published_tick_key(parsed[0])
    script = r.register_script(_REPAIR)
    res = RepairResult()
    for _ in range(100_000):
        bound = max(int(r.get(marker) or 0), tick_ms) + tolerance_ms
        entries: list[Any] = list(r.xrange(stream, f"{bound + 1}-0", "+", count=batch) or [])
        if entries:
            pipe = r.pipeline(transaction=False)
            for eid, fields in entries:
                ahead_s = (int(eid.split(b"-")[0]) - bound + tolerance_ms) / 1000
                reason = (
                    f"entry ID {eid.decode()} is {ahead_s:.1f} s ahead of the published tick grid "
                    f"(tolerance {tolerance_ms} ms): not published by an observer; removed from the stream"
                )
                dead.park(stream, eid, reason, _payload(fields), pipe=pipe)
            res.parked += sum(int(x) for x in pipe.execute())
        ids = [e for e, _ in entries]
        deleted, done, new_top, moved = script(keys=[stream, marker], args=[tick_ms, tolerance_ms, res.deleted, *ids])
        res.deleted += int(deleted)
        res.new_top = new_top.decode() if isinstance(new_top, bytes) else str(new_top)
        res.groups_moved += int(moved)
        if int(done):
            break
    if res.deleted or res.groups_moved:
        kv(log, logging.WARNING, "forged entries ahead of the tick grid parked and removed; stream repaired",
           stream=stream, deleted=res.deleted, parked=res.parked, new_top=res.new_top,
           groups_moved=res.groups_moved)  # fmt: skip
    return res


def _payload(fields: Any) -> bytes:
    """The entry's payload field, or every field (msgpack) when it has none."""
    if isinstance(fields, dict):
        body = fields.get(keys.PAYLOAD_FIELD)
        if isinstance(body, bytes) and len(fields) == 1:
            return body
        return bytes(msgpack.packb(fields, use_bin_type=True))
    return b""
