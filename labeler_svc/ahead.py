"""Entries above the published tick grid: held aside by the labeler until the observer repairs or accepts them.

Every observer XADD raises ``keys.published_tick_key(market)`` atomically with the entry, so an observer's
entry is never above that tick when a consumer reads it. An entry more than ``tolerance_ms`` above it was not
published by an observer (a forged future ID, see :mod:`common.repair`): labelling it, or using it as the
future of real states, would corrupt labels and make every later real state look like a redelivery.

:func:`screen` guarantees, for one market's batch (IDs ascending):

* deleted entries (nil fields: the observer's repair removed them) are returned to be acknowledged;
* the suffix of the batch above the grid is moved into ``ahead`` (left pending, not acknowledged);
* a held entry is released, in ID order and with the stream's current fields, once the grid has caught up
  with it and a later entry arrives (the observer kept it: within its tolerance); one delivered again is
  taken from the new delivery. :func:`recheck` finds held entries the repair deleted.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from common import keys
from common.log import log_once

log = logging.getLogger("labeler")


def tick(eid: bytes) -> int:
    return int(eid.split(b"-", 1)[0])


def screen(
    r: redis.Redis, market: str, stream: str, newest: int, ahead: dict[bytes, Any], entries: list[Any], tol_ms: int
) -> tuple[list[Any], list[bytes]]:
    """``(entries to ingest, deleted IDs to acknowledge)``; updates ``ahead`` (see the module docstring)."""
    gone: list[bytes] = []
    if any(not f for _, f in entries):
        gone = [e for e, f in entries if not f]
        entries = [x for x in entries if x[1]]
    if ahead:
        for e, _ in entries:
            ahead.pop(bytes(e), None)
    if not entries or (not ahead and tick(entries[-1][0]) <= max(newest, 0) + tol_ms):
        return entries, gone  # the usual batch: contiguous with what the labeler holds
    grid = r.get(keys.published_tick_key(market))
    if grid is None:  # no observer publishes this stream (a replay, a tool): nothing to check against
        return entries, gone
    bound = int(grid) + tol_ms
    last = tick(entries[-1][0])
    release = sorted((e for e in ahead if tick(e) <= bound and tick(e) < last), key=tick)
    if release:
        pipe = r.pipeline(transaction=False)
        for e in release:
            pipe.xrange(stream, e, e)
        now_in = {  # as a raw reply: [field, value, ...]
            e: [x for kv in got[0][1].items() for x in kv]
            for e, got in zip(release, pipe.execute(), strict=True)
            if got
        }
        gone += [e for e in release if e not in now_in]
        for e in release:
            ahead.pop(e, None)
        entries = sorted([*entries, *now_in.items()], key=lambda x: tick(x[0]))
    n = len(entries)
    while n and tick(entries[n - 1][0]) > bound:  # IDs ascend: the entries above the grid are a suffix
        n -= 1
    if n < len(entries):
        ahead.update((bytes(e), f) for e, f in entries[n:])
        log_once(log, f"ahead:{market}", "entries above the published tick grid held aside (forged?)",
                 market=market, first=entries[n][0].decode(errors="replace"), grid=int(grid))  # fmt: skip
    return entries[:n], gone


def recheck(r: redis.Redis, stream: str, ahead: dict[bytes, Any], limit: int = 1000) -> list[bytes]:
    """Held entries (the oldest ``limit``) deleted from the stream since: removed from ``ahead`` and returned."""
    ids = list(ahead)[:limit]
    pipe = r.pipeline(transaction=False)
    for eid in ids:
        pipe.xrange(stream, eid, eid)
    gone = [e for e, f in zip(ids, pipe.execute(), strict=True) if not f]
    for e in gone:
        ahead.pop(e)
    return gone
