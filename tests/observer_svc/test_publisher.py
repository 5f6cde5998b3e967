"""Replicas publish contiguous streams: a replica ahead of a slower one waits for it instead of leaving a gap."""

from __future__ import annotations

import asyncio

import redis

from common import keys
from common.schema import tick_of_entry_id
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
