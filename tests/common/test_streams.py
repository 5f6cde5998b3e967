"""Safe trimming on a real Redis: the age setting never removes what a consumer group still needs."""

from __future__ import annotations

import redis

from common import keys
from common.deadletter import DeadLetters
from common.metrics import snapshot
from common.schema import tick_of_entry_id
from common.streams import ensure_group, publish_states, repair_forged_top, trim_by_age

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
    (st,) = trim_by_age(r, [S], now_ms=now, max_age_s=10)  # by age alone: only the last 20 entries stay
    assert _first_tick(r) <= tick_of_entry_id(ids[1000])  # the archiver's oldest pending entry is kept
    assert r.xlen(S) >= 2000
    # a visible alarm: who holds trimming back, and by how much
    assert st.held_by == keys.ARCHIVER_GROUP and st.min_id == ids[1000] and st.held_back_s >= 1000 * 0.5 - 10
    assert snapshot()[f"fusion_stream_trim_held_back_seconds{{stream={S}}}"] == st.held_back_s
    # the archiver catches up: now the labeler's unread entries hold trimming back
    r.xack(S, keys.ARCHIVER_GROUP, *_read(r, keys.ARCHIVER_GROUP, 5000, ack=0))
    r.xack(S, keys.ARCHIVER_GROUP, *[e for e, _ in r.xrange(S, ids[1000], ids[1999])])
    trim_by_age(r, [S], now_ms=now, max_age_s=10)
    assert _first_tick(r) <= tick_of_entry_id(ids[2500]) and r.xlen(S) >= 500
    # everyone caught up: trimming goes down to the age cutoff (approximate: whole nodes of <= 100 entries)
    _read(r, keys.LABELER_GROUP, 5000, ack=5000)
    (st,) = trim_by_age(r, [S], now_ms=now, max_age_s=10)
    assert 20 <= r.xlen(S) <= 120
    assert st.held_by is None and snapshot()[f"fusion_stream_trim_held_back_seconds{{stream={S}}}"] == 0


def test_a_group_that_never_read_holds_trimming(r: redis.Redis) -> None:
    ensure_group(r, S, keys.ARCHIVER_GROUP, "0")  # created with the stream, its consumer never started
    _publish(r, 500)
    trim_by_age(r, [S], now_ms=T0 + 500 * 499, max_age_s=5)
    assert r.xlen(S) == 500 and _first_tick(r) == T0


def test_repair_parks_deletes_and_sets_the_stream_and_groups_back(r: redis.Redis) -> None:
    for g in keys.STATES_GROUPS:
        ensure_group(r, S, g, "0")
    ids = _publish(r, 10)
    r.set(keys.published_tick_key(M), T0 + 500 * 9)
    r.xadd(S, {"d": b"f1"}, id=f"{T0 + 3_600_000}-0")
    r.xadd(S, {"x": b"no payload field"}, id=f"{T0 + 3_600_000}-7")
    assert len(r.xreadgroup(keys.ARCHIVER_GROUP, "a", {S: ">"})[0][1]) == 12  # cursor in the future
    dl = DeadLetters(r, "test")
    res = repair_forged_top(r, S, T0 + 500 * 10, 5_000, dl, batch=1)  # one entry per round
    assert (res.parked, res.deleted, res.new_top, res.groups_moved) == (2, 2, ids[-1], 1)
    info = {g["name"]: g for g in r.xinfo_groups(S)}
    assert info[keys.ARCHIVER_GROUP.encode()]["last-delivered-id"] == ids[-1].encode()
    assert info[keys.LABELER_GROUP.encode()]["last-delivered-id"] == b"0-0"  # untouched
    assert r.xinfo_stream(S)["last-generated-id"] == ids[-1].encode()
    parked = r.xrange(keys.DEAD_LETTER_STREAM)
    assert [f[b"id"] for _, f in parked] == [f"{T0 + 3_600_000}-0".encode(), f"{T0 + 3_600_000}-7".encode()]
    assert parked[0][1][b"payload"] == b"f1" and parked[0][1][b"service"] == b"test"
    assert publish_states(r, [(S, f"{T0 + 5000}-0", b"x")]).added == 1  # the grid flows on
    assert info[keys.ARCHIVER_GROUP.encode()]["lag"] == 0 and r.xinfo_groups(S)[0]["lag"] == 1
    # nothing above the bound: a no-op
    again = repair_forged_top(r, S, T0 + 5500, 5_000, dl)
    assert (again.deleted, again.groups_moved, len(r.xrange(keys.DEAD_LETTER_STREAM))) == (0, 0, 2)


def test_repair_when_the_forged_entry_was_deleted_but_the_last_id_stayed(r: redis.Redis) -> None:
    """XADD far ahead then XDEL: no entry to park, but Redis still refuses every tick until XSETID."""
    _publish(r, 4)
    far = f"{T0 + 10 * 365 * 86_400_000}-0"
    r.xadd(S, {"d": b"f"}, id=far)
    r.xdel(S, far)
    assert publish_states(r, [(S, f"{T0 + 2000}-0", b"x")]).duplicates == 1  # refused
    res = repair_forged_top(r, S, T0 + 2000, 5_000, DeadLetters(r, "test"))
    assert res.deleted == 0 and res.new_top == f"{T0 + 1500}-0"
    assert publish_states(r, [(S, f"{T0 + 2000}-0", b"x")]).added == 1


def test_streams_info_shows_the_trim_alarm(r: redis.Redis, redis_url: str, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from common.streams_cli import main

    monkeypatch.setenv("FUSION_STREAM_MAX_AGE_S", "60")
    ensure_group(r, S, keys.ARCHIVER_GROUP, "0")
    ensure_group(r, S, keys.LABELER_GROUP, "0")
    _publish(r, 400)  # 200 s
    _read(r, keys.ARCHIVER_GROUP, 400, ack=400)
    _read(r, keys.LABELER_GROUP, 100, ack=100)
    assert main(["--redis-url", redis_url, "info", M]) == 0
    out = capsys.readouterr().out
    assert f"trim: HELD BACK by group labeler (oldest unacknowledged/unread {T0 + 99 * 500}-1)" in out
    assert "keeps 140 s more than the age setting (60 s)" in out  # 200 s of states, nothing trimmed yet
    _read(r, keys.LABELER_GROUP, 400, ack=400)
    assert main(["--redis-url", redis_url, "info", M]) == 0
    assert "trim: follows the age setting (60 s)" in capsys.readouterr().out
