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
    for k in range(6):  # rounds 0.6 s apart (< ttl): a handover waits until others held the market 2 x ttl
        for lm in lms:
            lm.renew(now + 600 * k)
    cov = _coverage(lms)
    assert all(cov[m] == 2 for m in MARKETS), cov  # every market held by exactly 2 observers
    assert sum(len(lm.held) for lm in lms) == 12
    assert all(len(set(lm.held)) == len(lm.held) for lm in lms)


def test_dead_observer_leases_move(r: redis.Redis) -> None:
    lms = [LeaseManager(r, f"obs{i}", MARKETS, replicas=1, ttl_ms=1000) for i in range(2)]
    now = 0
    for k in range(6):
        for lm in lms:
            lm.renew(now + 600 * k)
    now += 3000
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


def test_late_observer_gets_its_share_with_one_replica(r: redis.Redis) -> None:
    """The demo's case: one observer starts first and takes every market; the second must then get
    the markets the assignment gives it (a full slot set must not freeze the first one's leases)."""
    from observer_svc.leases import assign

    first = LeaseManager(r, "obs-a", MARKETS, replicas=1, ttl_ms=1000)
    assert first.renew(10_000) == set(MARKETS)
    second = LeaseManager(r, "obs-b", MARKETS, replicas=1, ttl_ms=1000)
    for k in range(6):  # 0.6 s apart: the first lets go once the second held its share 2 x ttl
        second.renew(10_100 + 600 * k)
        first.renew(10_100 + 600 * k)
    plan = assign(MARKETS, ["obs-a", "obs-b"], 1)
    assert set(first.held) == {m for m, o in plan.items() if o == ["obs-a"]}
    assert set(second.held) == {m for m, o in plan.items() if o == ["obs-b"]}
    assert set(second.held) and set(first.held)
    assert _coverage([first, second]) == Counter(MARKETS)


def test_a_newcomer_is_not_handed_a_market_before_it_held_it_for_the_delay(r: redis.Redis) -> None:
    """A restarted observer takes its lease at once but publishes only after it has connected: the holder
    lets go only once the newcomer has held the market for the handover delay (no gap in between)."""
    first = LeaseManager(r, "obs-a", MARKETS, replicas=1, ttl_ms=1000)
    assert first.renew(10_000) == set(MARKETS)
    second = LeaseManager(r, "obs-b", MARKETS, replicas=1, ttl_ms=1000)
    second.renew(10_100)
    first.renew(10_200)
    second.renew(10_800)
    first.renew(11_000)  # 0.8 s after it saw the newcomer hold its share: < 2 x ttl, it keeps every market
    assert set(first.held) == set(MARKETS)
    second.renew(11_500)
    first.renew(11_700)
    second.renew(12_100)
    first.renew(12_300)  # 2.1 s: > 2 x ttl, it hands the newcomer's share over
    assert set(first.held) != set(MARKETS) and _coverage([first, second]) == Counter(MARKETS)


def test_two_observers_share_two_markets() -> None:
    """Plain rendezvous hashing gave both of the demo's markets to observer-2; the load bound splits them."""
    from observer_svc.leases import assign

    plan = assign(["BTC-5M", "ETH-5M"], ["observer-1", "observer-2"], 1)
    assert sorted(o for owners in plan.values() for o in owners) == ["observer-1", "observer-2"]
    many = assign(MARKETS, ["a", "b", "c", "d"], 2)
    assert all(len(set(o)) == 2 for o in many.values())
    assert max(Counter(o for owners in many.values() for o in owners).values()) == 3  # ceil(6 * 2 / 4)
