"""Pure helpers on the archiver's Redis replies (raw XREADGROUP lists, RESP3 dicts, XAUTOCLAIM's parsed entries).

No IO: every function takes a reply and returns plain values, so the consumer loop only orchestrates.
"""

from __future__ import annotations

from typing import Any

import redis

#: errors of a Redis that restarts, fails over or is loading: retried with backoff, nothing acked early
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def payload_of(fields: Any, name: bytes) -> Any:
    """The payload field of an entry's fields (raw list or parsed dict); None when absent."""
    if not fields:
        return None
    if isinstance(fields, dict):
        return fields.get(name)
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


def as_str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def stream_replies(resp: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP reply (RESP2 list or RESP3 dict) -> [(stream, entries)]."""
    if not resp:
        return []
    if isinstance(resp, dict):
        out = []
        for k, v in resp.items():
            # raw: {stream: [entry, ...]}; redis-py's RESP3 parsing: {stream: [[entry, ...]]}
            if v and isinstance(v[0], list) and v[0] and isinstance(v[0][0], list | tuple):
                v = v[0]
            out.append((as_str(k), v))
        return out
    return [(as_str(name), entries) for name, entries in resp]


def entries_of(resp: Any, stream: str) -> list[Any]:
    """The entries of ``stream`` in an XREADGROUP reply ([] when it has none)."""
    for name, entries in stream_replies(resp):
        if name == stream:
            return list(entries or [])
    return []
