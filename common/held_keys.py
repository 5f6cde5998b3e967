"""Keys that name their holder (locks, leases): renewed or released only while they still name the caller.

Both are one Lua script (compare-and-expire, compare-and-delete), so a holder whose key expired and was taken by
another never extends or deletes the other's.
"""

from __future__ import annotations

from typing import Any

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def renew(r: Any, key: str, holder: str | bytes, ttl_ms: int) -> bool:
    """Set ``key``'s TTL to ``ttl_ms`` if it holds ``holder``; True when it did."""
    return bool(r.eval(_RENEW, 1, key, holder, int(ttl_ms)))


def release(r: Any, key: str, holder: str | bytes) -> bool:
    """Delete ``key`` if it holds ``holder``; True when it did."""
    return bool(r.eval(_RELEASE, 1, key, holder))
