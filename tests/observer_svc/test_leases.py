"""Leases spread markets over observers, R replicas each, and move when an observer dies."""

from __future__ import annotations

from collections import Counter

import redis

from observer_svc.leases import LeaseManager

MARKETS = [f"M{i}" for i in range(6)]


def _coverage(managers: list[LeaseManager]) -> Counter[str]:
    return Counter(m for lm in managers for m in lm.held)


def test_markets_spread_with_replicas(r: redis.Redis) -> None:
    lms = [LeaseManager(r, f"obs{i}", MARKETS, replicas=2, ttl_ms=1000) for i in range(3)]
    now = 10_000
    for lm in lms:
        lm.renew(now)  # register all first
    for _ in range(3):
        for lm in lms:
            lm.renew(now)
    cov = _coverage(lms)
    assert all(cov[m] == 2 for m in MARKETS), cov  # every market held by exactly 2 observers
    assert sum(len(lm.held) for lm in lms) == 12
    assert all(len(set(lm.held)) == len(lm.held) for lm in lms)


def test_dead_observer_leases_move(r: redis.Redis) -> None:
    lms = [LeaseManager(r, f"obs{i}", MARKETS, replicas=1, ttl_ms=1000) for i in range(2)]
    now = 0
    for _ in range(3):
        for lm in lms:
            lm.renew(now)
    assert sum(len(lm.held) for lm in lms) == 6
    dead, alive = lms
    # dead stops renewing; its keys expire in Redis after ttl (real time), and it leaves the zset
    r.zrem("fusion:observers", dead.me)  # its heartbeat aged out
    for m, slot in dead.held.items():
        r.pexpire(f"fusion:lease:{{{m}}}:{slot}", 1)
    import time

    time.sleep(0.05)
    alive.renew(now + 3500)
    assert set(alive.held) == set(MARKETS)


def test_release_all(r: redis.Redis) -> None:
    lm = LeaseManager(r, "solo", MARKETS, replicas=1)
    assert lm.renew() == set(MARKETS)
    lm.release_all()
    other = LeaseManager(r, "other", MARKETS, replicas=1)
    assert other.renew() == set(MARKETS)
