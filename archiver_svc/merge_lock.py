"""The archiver's per-window merge lock: at most one archiver merges into a window's stored object at a time.

``WindowLock(r, consumer, ttl_ms).held(stream, window_start_ms)`` is a context manager on the Redis key
:func:`common.keys.archive_lock_key` (``SET NX PX``), released by a compare-and-delete script so a lock that
expired and was taken by another archiver is never deleted. The token is ``"<consumer>/<nonce>"``: a lock held
by the same consumer name with another nonce belongs to a dead incarnation of this consumer (names are unique
among live archivers) and is taken over at once. Waiting longer than twice the TTL raises :class:`LockTimeout`
(the write fails, its entries stay pending and are retried).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import redis

from archiver_svc.redis_replies import REDIS_ERRORS
from common import held_keys, keys


class LockTimeout(RuntimeError):
    pass


class WindowLock:
    """See the module docstring."""

    def __init__(self, r: redis.Redis, consumer: str, ttl_ms: int) -> None:
        self.r = r
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self.token = f"{consumer}/{uuid.uuid4().hex[:12]}".encode()

    @contextlib.contextmanager
    def held(self, stream: str, window_start_ms: int) -> Iterator[None]:
        key = keys.archive_lock_key(stream, window_start_ms)
        token = self.token
        mine = self.consumer.encode() + b"/"
        deadline = time.monotonic() + 2 * self.ttl_ms / 1000
        while True:
            if self.r.set(key, token, nx=True, px=self.ttl_ms):
                break
            holder = self.r.get(key)
            # a dead incarnation of us
            dead_me = isinstance(holder, bytes) and holder.startswith(mine) and holder != token
            if dead_me and self.r.set(key, token, xx=True, px=self.ttl_ms, get=True) == holder:
                break
            if time.monotonic() > deadline:
                raise LockTimeout(key)
            time.sleep(0.02)
        try:
            yield
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                held_keys.release(self.r, key, token)
