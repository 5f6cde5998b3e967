"""The one call every long-running service makes when it starts: :func:`service_started`.

It names the process's alerts (``service/instance``) and records the start in Redis: ``ZADD`` on
``keys.service_starts_key(service, instance)`` (score and member: the start time in ms and the pid), capped to the
newest :data:`KEEP` starts and expiring :data:`TTL_S` after the last one, and the instance in ``keys.SERVICES_SET``.
The health checker (:mod:`common.healthwatch`) reads them to find restart loops. The instance must be stable across
restarts (a configured id or the hostname, never a pid) or a loop would look like many single starts.

Guarantees: never raises and never delays a start by more than a short Redis timeout (2 s); a start that could not
be recorded is logged once.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import redis

from common import alerts, keys
from common.log import log_once
from common.names import is_valid_name

log = logging.getLogger("fusion.lifecycle")
KEEP = 50
TTL_S = 7 * 86400


def default_instance() -> str:
    """This host's name as an instance name (stable across restarts of a container or a machine)."""
    return keys.instance_name(socket.gethostname())


def service_started(service: str, instance: str, redis_url: str | None = None) -> bool:
    """Record that ``service`` (instance ``instance``) starts now; True when recorded."""
    inst = keys.instance_name(instance)
    alerts.set_service(f"{service}/{inst}")
    if redis_url is None:
        from common.settings import get_settings

        redis_url = get_settings().redis_url
    now = int(time.time() * 1000)
    try:
        r = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            key = keys.service_starts_key(service, inst)
            pipe = r.pipeline(transaction=True)
            pipe.zadd(key, {f"{now}:{os.getpid()}": now})
            pipe.zremrangebyrank(key, 0, -(KEEP + 1))
            pipe.expire(key, TTL_S)
            pipe.sadd(keys.SERVICES_SET, f"{service}/{inst}")
            pipe.execute()
        finally:
            r.close()
        return True
    except (redis.RedisError, OSError) as e:
        log_once(log, f"start-record:{type(e).__name__}", "service start not recorded (Redis unavailable)",
                 service=service, error=type(e).__name__)  # fmt: skip
        return False


def recent_starts(r: redis.Redis, since_ms: int) -> dict[str, list[int]]:
    """``service/instance`` -> its recorded starts at or after ``since_ms`` (ms), for every recorded instance."""
    names = (m.decode(errors="replace") if isinstance(m, bytes) else str(m) for m in r.smembers(keys.SERVICES_SET))
    members = sorted(w for w in names if all(is_valid_name(p) for p in w.split("/", 1)) and "/" in w)
    pipe = r.pipeline(transaction=False)
    for who in members:
        service, _, inst = who.partition("/")
        pipe.zrangebyscore(keys.service_starts_key(service, inst), since_ms, "+inf", withscores=True)
    return {who: [int(s) for _, s in got] for who, got in zip(members, pipe.execute(), strict=True)}
