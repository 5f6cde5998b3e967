"""Redis Streams helpers shared by the services.

* :func:`publish_states` XADDs many entries with explicit IDs in one pipeline; an ID that is not
  above the stream's top (another replica published that tick already) is *refused by Redis* and
  counted as a duplicate, never raised: that is how replicas de-duplicate.
* :func:`trim_by_age` bounds a stream with ``XTRIM MINID ~`` so memory stays flat 24/7.
* :func:`ensure_group` creates a consumer group (and the stream) idempotently.
* :func:`scan_streams` never returns a stream whose market name is outside :mod:`common.names`' grammar
  (e.g. ``fusion:{BTC-5M/.}:states``): such a stream is counted and logged once (name quoted), then ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from common.keys import PAYLOAD_FIELD, market_of_stream
from common.log import log_once
from common.metrics import counter

log = logging.getLogger("fusion.streams")
IGNORED = counter("fusion_streams_ignored_total", "streams ignored: market name outside the grammar", ("kind",))


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


def trim_by_age(r: redis.Redis, streams: Sequence[str], now_ms: int, max_age_s: int) -> None:
    """Approximate-trim every stream to entries newer than ``now_ms - max_age_s``."""
    if not streams:
        return
    min_id = max(0, now_ms - max_age_s * 1000)
    pipe = r.pipeline(transaction=False)
    for s in streams:
        pipe.xtrim(s, minid=f"{min_id}-0", approximate=True)
    pipe.execute(raise_on_error=False)


def ensure_group(r: redis.Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create ``group`` on ``stream`` (MKSTREAM); False when it already existed."""
    try:
        r.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except redis.ResponseError as e:
        if "BUSYGROUP" in str(e):
            return False
        raise


def scan_streams(r: redis.Redis, kind: str) -> list[str]:
    """Every ``fusion:{M}:<kind>`` stream that exists (kind = states | labels) whose ``M`` follows the name
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
