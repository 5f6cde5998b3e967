"""Replicas publish contiguous streams: a replica ahead of a slower one waits for it instead of leaving a gap."""

from __future__ import annotations

import asyncio

import pytest
import redis

from common import keys
from common.schema import tick_of_entry_id
from common.streams import ensure_group
from observer_svc.publisher import Publisher

S = keys.states_stream("BTC-5M")


def _entries(ticks: range) -> list[tuple[str, str, bytes]]:
    return [(S, f"{t}-0", f"state-{t}".encode()) for t in ticks]


def test_ahead_replica_waits_for_the_slower_one_then_forces(r: redis.Redis, redis_url: str) -> None:
    async def main() -> tuple[Publisher, Publisher]:
        slow = Publisher(redis_url, 3600, step_ms=500, gap_wait_s=5.0)
        fast = Publisher(redis_url, 3600, step_ms=500, gap_wait_s=0.5)
        tasks = [asyncio.create_task(p.run()) for p in (slow, fast)]
        slow.enqueue(_entries(range(1000, 5001, 500)))
        await asyncio.wait_for(slow.drained(), 5)
        fast.enqueue(_entries(range(7000, 9001, 500)))  # restarted replica, ahead of the stream
        await asyncio.sleep(0.3)
        # 7000 would skip 5500..6500, which the slow replica still has: held, not published
        assert [tick_of_entry_id(e) for e, _ in r.xrange(S)][-1] == 5000
        slow.enqueue(_entries(range(5500, 7501, 500)))
        await asyncio.wait_for(slow.drained(), 5)
        await asyncio.wait_for(fast.drained(), 5)
        # nobody has 9500..11500: after gap_wait_s the fast replica publishes anyway (a real gap, not a stall)
        fast.enqueue(_entries(range(12000, 12501, 500)))
        await asyncio.wait_for(fast.drained(), 5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return slow, fast

    slow, fast = asyncio.run(main())
    ticks = [tick_of_entry_id(e) for e, _ in r.xrange(S)]
    assert ticks == list(range(1000, 9001, 500)) + [12000, 12500]
    assert [f[b"d"] for _, f in r.xrange(S)][0] == b"state-1000"
    assert slow.added + fast.added == len(ticks)
    assert fast.duplicates == 2 and slow.duplicates == 0  # 7000 and 7500 came from the slow replica


def _run(pub: Publisher, batches: list[list[tuple[str, str, bytes]]], between=None) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        task = asyncio.create_task(pub.run())
        for i, b in enumerate(batches):
            if i and between is not None:
                between(i)
            pub.enqueue(b)
            await asyncio.wait_for(pub.drained(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pub.close()

    asyncio.run(main())


@pytest.mark.parametrize("ahead_ms", [60_000, 10 * 365 * 86_400_000])
def test_future_entry_is_parked_and_the_market_keeps_flowing(r: redis.Redis, redis_url: str, ahead_ms: int) -> None:
    """A forged entry far ahead of the tick grid: parked once, deleted, stream and groups back on the grid."""
    forged = f"{5000 + ahead_ms}-0"

    def inject(i: int) -> None:
        r.xadd(S, {"d": b"forged"}, id=forged)
        for g in (keys.ARCHIVER_GROUP, keys.LABELER_GROUP):  # both groups read it: cursors in the future
            ensure_group(r, S, g, "0")
            assert r.xreadgroup(g, "c1", {S: ">"}, count=1000)

    pub = Publisher(redis_url, 3600, step_ms=500)
    _run(pub, [_entries(range(1000, 5001, 500)), _entries(range(5500, 8001, 500))], between=inject)
    ticks = [tick_of_entry_id(e) for e, _ in r.xrange(S)]
    assert ticks == list(range(1000, 8001, 500))  # nothing lost after it, forged entry gone
    assert pub.duplicates == 0 and pub.lost == 0 and pub.forged == 1
    parked = [f for _, f in r.xrange(keys.DEAD_LETTER_STREAM) if f[b"id"] == forged.encode()]
    assert len(parked) == 1 and parked[0][b"payload"] == b"forged" and parked[0][b"stream"] == S.encode()
    for g in r.xinfo_groups(S):  # cursors back on the real top: the new ticks are delivered
        assert tick_of_entry_id(g["last-delivered-id"]) <= 5000 and g["lag"] == 6
    got = r.xreadgroup(keys.ARCHIVER_GROUP, "c1", {S: ">"}, count=100)
    assert [tick_of_entry_id(e) for e, _ in got[0][1]] == list(range(5500, 8001, 500))
    # the forged ID stays in the pending list as deleted (nil fields), for the consumers to acknowledge
    pend = r.xreadgroup(keys.ARCHIVER_GROUP, "c1", {S: "0"}, count=100)[0][1]
    assert (forged.encode(), None) in [(e, f or None) for e, f in pend]


def test_future_last_id_without_an_entry_is_repaired(r: redis.Redis, redis_url: str) -> None:
    """XADD far ahead then XDEL: the stream's last ID stays in the future and Redis refuses every tick."""

    def inject(i: int) -> None:
        r.xadd(S, {"d": b"forged"}, id="999999999999-0")
        r.xdel(S, "999999999999-0")

    pub = Publisher(redis_url, 3600, step_ms=500)
    _run(pub, [_entries(range(1000, 3001, 500)), _entries(range(3500, 5001, 500))], between=inject)
    assert [tick_of_entry_id(e) for e, _ in r.xrange(S)] == list(range(1000, 5001, 500))
    assert pub.errors == 0 and pub.lost == 0 and pub.duplicates == 0


def test_ticks_below_a_top_within_tolerance_are_lost_not_duplicates(r: redis.Redis, redis_url: str) -> None:
    pub = Publisher(redis_url, 3600, step_ms=500)
    _run(
        pub,
        [_entries(range(1000, 5001, 500)), _entries(range(5500, 8001, 500))],
        between=lambda i: r.xadd(S, {"d": b"ahead"}, id="7000-0"),  # 2 s ahead: a replica could be
    )
    assert pub.lost == 3 and pub.duplicates == 1 and pub.forged == 0  # 5500..6500 lost; 7000 exists
    assert [tick_of_entry_id(e) for e, _ in r.xrange(S)] == [*range(1000, 5001, 500), *range(7000, 8001, 500)]


def test_groups_exist_from_the_first_entry_and_hold_trimming(r: redis.Redis, redis_url: str) -> None:
    pub = Publisher(redis_url, 5, step_ms=500)
    pub.trim_every_s = 0.0
    _run(pub, [_entries(range(1000, 60_001, 500)), _entries(range(60_500, 61_001, 500))])
    assert {g["name"] for g in r.xinfo_groups(S)} == {keys.ARCHIVER_GROUP.encode(), keys.LABELER_GROUP.encode()}
    assert r.xlen(S) == len(range(1000, 61_001, 500))  # no consumer has read anything: nothing trimmed
