"""Safe trimming on a real Redis: the age setting never removes what a consumer group still needs."""

from __future__ import annotations

import redis

from common import keys
from common.schema import tick_of_entry_id
from common.streams import ensure_group, publish_states, trim_by_age

M = "BTC-5M"
S = keys.states_stream(M)
T0 = 1_763_856_000_000


def _publish(r: redis.Redis, n: int, start: int = 0) -> list[str]:
    ids = [f"{T0 + 500 * i}-0" for i in range(start, start + n)]
    assert publish_states(r, [(S, e, b"x") for e in ids]).added == n
    return ids


def _first_tick(r: redis.Redis) -> int:
    return tick_of_entry_id(r.xrange(S, count=1)[0][0])


def _read(r: redis.Redis, group: str, n: int, ack: int) -> list[bytes]:
    got = r.xreadgroup(group, "c1", {S: ">"}, count=n)
    ids = [e for e, _ in got[0][1]] if got else []
    if ack:
        r.xack(S, group, *ids[:ack])
    return ids


def test_trim_keeps_unacked_and_unread_entries(r: redis.Redis) -> None:
    ensure_group(r, S, keys.ARCHIVER_GROUP, "0")
    ensure_group(r, S, keys.LABELER_GROUP, "0")
    ids = _publish(r, 3000)
    now = T0 + 500 * 2999
    _read(r, keys.ARCHIVER_GROUP, 2000, ack=1000)  # 1000..1999 pending (read, not yet archived)
    _read(r, keys.LABELER_GROUP, 2500, ack=2500)  # 2500.. never read
    trim_by_age(r, [S], now_ms=now, max_age_s=10)  # by age alone: only the last 20 entries stay
    assert _first_tick(r) <= tick_of_entry_id(ids[1000])  # the archiver's oldest pending entry is kept
    assert r.xlen(S) >= 2000
    # the archiver catches up: now the labeler's unread entries hold trimming back
    r.xack(S, keys.ARCHIVER_GROUP, *_read(r, keys.ARCHIVER_GROUP, 5000, ack=0))
    r.xack(S, keys.ARCHIVER_GROUP, *[e for e, _ in r.xrange(S, ids[1000], ids[1999])])
    trim_by_age(r, [S], now_ms=now, max_age_s=10)
    assert _first_tick(r) <= tick_of_entry_id(ids[2500]) and r.xlen(S) >= 500
    # everyone caught up: trimming goes down to the age cutoff (approximate: whole nodes of <= 100 entries)
    _read(r, keys.LABELER_GROUP, 5000, ack=5000)
    trim_by_age(r, [S], now_ms=now, max_age_s=10)
    assert 20 <= r.xlen(S) <= 120


def test_a_group_that_never_read_holds_trimming(r: redis.Redis) -> None:
    ensure_group(r, S, keys.ARCHIVER_GROUP, "0")  # created with the stream, its consumer never started
    _publish(r, 500)
    trim_by_age(r, [S], now_ms=T0 + 500 * 499, max_age_s=5)
    assert r.xlen(S) == 500 and _first_tick(r) == T0
