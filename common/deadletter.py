"""The dead-letter stream: where every service parks an entry it cannot use, once, for a person to inspect.

Guarantees:
* **Once per entry.** Several services reading the same bad entry (archiver, labeler, trader) park one
  copy: the first parks the payload with its service and reason; the others are counted, not stored
  again (a marker per ``(stream, entry id)`` lives ``SEEN_TTL_S``).
* **Bounded in bytes and entries.** A payload above ``max_entry_bytes`` is stored as its first
  ``max_entry_bytes`` bytes with its full size and sha256 (the original stays in its source stream
  until trimmed); the stream keeps at most ``max_bytes`` of payload and ``max_entries`` entries,
  dropping the oldest parked entries first.
* Atomic: the marker, the entry and the byte count change together (one Lua script).

Fields of a parked entry: ``stream``, ``id``, ``service``, ``reason``, ``size`` (original payload
bytes), ``sha256``, ``truncated`` (``0``/``1``), ``payload``. Read them with
``redis-cli XRANGE fusion:deadletter - +`` or ``fusion streams deadletter``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

from common import keys

SEEN_TTL_S = 7 * 86_400
MAX_ENTRY_BYTES = 256 * 1024
MAX_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 100_000

# KEYS: dead-letter stream, bytes counter, seen marker. ARGV: ttl, max_bytes, max_entries, stream, id, service,
# reason, size, sha256, truncated, payload. Returns 1 when parked, 0 when another service parked it already.
_PARK = """
if not redis.call('SET', KEYS[3], ARGV[6], 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local n = string.len(ARGV[11])
redis.call('XADD', KEYS[1], '*', 'stream', ARGV[4], 'id', ARGV[5], 'service', ARGV[6], 'reason', ARGV[7],
  'size', ARGV[8], 'sha256', ARGV[9], 'truncated', ARGV[10], 'payload', ARGV[11], 'held', n)
local total = redis.call('INCRBY', KEYS[2], n)
local maxb, maxn = tonumber(ARGV[2]), tonumber(ARGV[3])
while total > maxb or redis.call('XLEN', KEYS[1]) > maxn do
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #old == 0 then break end
  local f = old[1][2]
  local held = 0
  for i = 1, #f, 2 do if f[i] == 'held' then held = tonumber(f[i + 1]) end end
  redis.call('XDEL', KEYS[1], old[1][1])
  total = redis.call('DECRBY', KEYS[2], held)
end
return 1
"""


def _text(v: str | bytes) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


class DeadLetters:
    """Parks bad entries for one service (``service`` names it in every parked entry)."""

    def __init__(
        self,
        r: redis.Redis,
        service: str,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        max_bytes: int = MAX_BYTES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.r = r
        self.service = service
        self.max_entry_bytes = max_entry_bytes
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._script: Any = r.register_script(_PARK)

    def park(
        self,
        stream: str | bytes,
        entry_id: str | bytes,
        reason: str,
        payload: bytes,
        pipe: redis.client.Pipeline | None = None,
    ) -> Any:
        """Park ``payload`` (entry ``entry_id`` of ``stream``) with ``reason``, unless already parked.

        With ``pipe`` the script is queued on it (the caller executes, e.g. together with its XACK) and
        the pipeline's result for it is 1 (parked) or 0 (parked before); without, that value is returned."""
        s, eid = _text(stream), _text(entry_id)
        body = bytes(payload) if payload else b""
        held = body[: self.max_entry_bytes]
        args = [
            SEEN_TTL_S,
            self.max_bytes,
            self.max_entries,
            s,
            eid,
            self.service,
            reason[:500],
            len(body),
            hashlib.sha256(body).hexdigest(),
            int(len(held) < len(body)),
            held,
        ]
        return self._script(
            keys=[keys.DEAD_LETTER_STREAM, keys.DEAD_LETTER_BYTES, keys.dead_letter_seen_key(s, eid)],
            args=args,
            client=pipe if pipe is not None else self.r,
        )
