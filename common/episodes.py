"""Alerts once per episode: a condition that starts, lasts and ends (a data gap, a failing discovery, a lagging
consumer), shared by every process through one Redis hash.

:meth:`Episodes.open` sends the alert ``kind`` only when the episode ``(kind, key)`` was not open yet (set in
``keys.ALERT_EPISODES`` by a Lua script, and it did not start before the end of the last closed one, kept in
``keys.ALERT_EPISODES_CLOSED``: a replica that is late to see a gap does not reopen it); :meth:`Episodes.close`
sends ``{kind}-recovered`` with the episode's length only when it removed an open episode that started no later
than the close's time (a replica's first good tick, processed after another replica opened a later episode, does
not end it). So two replicas that
see the same gap, or a restarted process that sees it again, send one alert, and one "recovered" note, per episode.
Episodes bypass the sink's per-period de-duplication (the episode is the de-duplication); its rate limit applies.

Guarantees: never raises; a no-op without Redis traffic while alerts are off (:func:`common.alerts.enabled`); when
Redis does not answer or refuses writes (down, or out of memory: when the ``redis-memory`` alert matters most),
episodes fall back to this process's memory (logged once) so alerts still go out, and are closed from there.
:meth:`open_later` / :meth:`close_later` run on one background thread: an event loop calls them without waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
import redis

from common import alerts
from common.keys import ALERT_EPISODES, ALERT_EPISODES_CLOSED
from common.log import log_once

log = logging.getLogger("alerts")
RECOVERED = "-recovered"


# KEYS: open hash, closed hash. ARGV: field, value, since ms. 1: opened; 0: open already or over before it started.
_OPEN = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local ended = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if ended >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# KEYS: open hash, closed hash. ARGV: field, end ms. The open episode's value (nil: none), removed; its end kept.
# An episode that started after the end given is not ended by it (a replica's late "good" tick from before it).
_CLOSE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return nil end
local ok, d = pcall(cjson.decode, v)
if ok and type(d) == 'table' and tonumber(d['since_ms']) and tonumber(d['since_ms']) > tonumber(ARGV[2]) then
  return nil
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return v
"""


def _field(kind: str, key: str) -> str:
    return f"{kind}|{key}"


class Episodes:
    """Once-per-episode alerts of one process; see the module docstring. ``now_ms`` is the clock an episode's
    ``since_ms`` and length use when the caller gives none (wall clock)."""

    def __init__(self, r: redis.Redis | None, *, notify: Callable[..., bool] = alerts.notify,
                 enabled: Callable[[], bool] = alerts.enabled) -> None:  # fmt: skip
        self.r = r
        self.notify = notify
        self.enabled = enabled
        self._local: dict[str, dict[str, Any]] = {}  # used while Redis does not answer
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ synchronous
    def open(self, kind: str, key: str, text: str, *, since_ms: int | None = None, **fields: Any) -> bool:
        """Start the episode and send ``kind`` (True) unless it is open already (False)."""
        if not self.enabled():
            return False
        since = int(time.time() * 1000) if since_ms is None else since_ms
        value = orjson.dumps({"since_ms": since, "text": text, **fields}, default=str)
        f = _field(kind, key)
        try:
            assert self.r is not None
            first = bool(self.r.eval(_OPEN, 2, ALERT_EPISODES, ALERT_EPISODES_CLOSED, f, value, since))
        except (redis.RedisError, OSError, AssertionError) as e:
            log_once(log, f"episodes-redis:{type(e).__name__}", "alert episodes kept in memory (Redis unavailable)",
                     error=type(e).__name__)  # fmt: skip
            with self._lock:
                first = f not in self._local
                self._local.setdefault(f, {"since_ms": since})
        if first:
            self.notify(kind, text, key, dedup=False, since_ms=since, **fields)
        return first

    def close(self, kind: str, key: str, text: str, *, at_ms: int | None = None, **fields: Any) -> bool:
        """End the episode and send ``{kind}-recovered`` with ``gap_s`` (its length) when it was open."""
        if not self.enabled():
            return False
        f = _field(kind, key)
        since: int | None = None
        at = int(time.time() * 1000) if at_ms is None else at_ms
        removed = False
        try:
            assert self.r is not None
            raw = self.r.eval(_CLOSE, 2, ALERT_EPISODES, ALERT_EPISODES_CLOSED, f, at)
            removed = raw is not None
            if removed:
                try:
                    since = int(orjson.loads(raw)["since_ms"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    since = None
        except (redis.RedisError, OSError, AssertionError):
            pass
        with self._lock:  # opened while Redis refused (down, or out of memory); not one that started after ``at``
            got = self._local.get(f)
            if got is not None and got["since_ms"] <= at:
                del self._local[f]
            else:
                got = None
        if got is not None and not removed:
            removed, since = True, got["since_ms"]
        if not removed:
            return False
        extra: dict[str, Any] = {"since_ms": since, "gap_s": round((at - since) / 1000, 3)} if since is not None else {}
        self.notify(kind + RECOVERED, text, key, dedup=False, **(extra | fields))
        return True

    def open_keys(self, kind: str) -> set[str]:
        """The keys of the open episodes of ``kind`` (every process's, and those this one keeps in memory)."""
        prefix = _field(kind, "")
        with self._lock:
            names = list(self._local)
        try:
            assert self.r is not None
            names += [k.decode() if isinstance(k, bytes) else str(k) for k in self.r.hkeys(ALERT_EPISODES)]
        except (redis.RedisError, OSError, AssertionError):
            pass
        return {n[len(prefix) :] for n in names if n.startswith(prefix)}

    # ------------------------------------------------------------------ without waiting
    def _submit(self, fn: Callable[..., bool], *a: Any, **kw: Any) -> Future[bool] | None:
        if not self.enabled():
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="alert-episodes")
            return self._pool.submit(fn, *a, **kw)

    def open_later(self, kind: str, key: str, text: str, **kw: Any) -> Future[bool] | None:
        """:meth:`open` on the background thread (never blocks the caller)."""
        return self._submit(self.open, kind, key, text, **kw)

    def close_later(self, kind: str, key: str, text: str, **kw: Any) -> Future[bool] | None:
        """:meth:`close` on the background thread (never blocks the caller)."""
        return self._submit(self.close, kind, key, text, **kw)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the background calls queued so far (tests, shutdown)."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.submit(lambda: None).result(timeout_s)


_episodes: dict[str, Episodes] = {}
_ep_lock = threading.Lock()


def episodes(redis_url: str | None = None) -> Episodes:
    """The process's episodes on ``redis_url`` (default ``FUSION_REDIS_URL``); the Redis client is made on first use,
    only with alerts on."""
    if redis_url is None:
        from common.settings import get_settings

        redis_url = get_settings().redis_url
    with _ep_lock:
        ep = _episodes.get(redis_url)
        if ep is None:
            ep = _episodes[redis_url] = _LazyEpisodes(redis_url)
        return ep


class _LazyEpisodes(Episodes):
    """Connects to Redis on its first open/close (never while alerts are off)."""

    def __init__(self, url: str) -> None:
        super().__init__(None)
        self.url = url

    def open(self, kind: str, key: str, text: str, **kw: Any) -> bool:
        self._connect()
        return super().open(kind, key, text, **kw)

    def close(self, kind: str, key: str, text: str, **kw: Any) -> bool:
        self._connect()
        return super().close(kind, key, text, **kw)

    def open_keys(self, kind: str) -> set[str]:
        self._connect()
        return super().open_keys(kind)

    def _connect(self) -> None:
        if self.r is None and self.enabled():
            self.r = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=3)


def reset() -> None:
    """Forget the process's episodes object (tests; after settings change)."""
    with _ep_lock:
        _episodes.clear()
