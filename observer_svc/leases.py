"""Market leases: spread markets over observer processes, R replicas per market.

Each market has ``replicas`` lease slots (``fusion:lease:{M}:<slot>``, value = observer id,
with a TTL). An observer heartbeats in ``fusion:observers``; every ``renew`` call it computes
the same rendezvous-hash assignment as every other live observer (each market to its
``replicas`` highest-scoring observers), renews the slots it holds (compare-and-expire),
releases a market no longer assigned to it once enough other live observers hold it (so coverage
never dips while observers come and go) and takes a free slot of each market assigned to it,
never two slots of one market. When the regular slots of a market are all held by observers it is no
longer assigned to, its new owner takes the market's one extra handover slot (``replicas``), and they
release once it holds it. A dead observer drops out of the live list after ttl and its
slots expire after ttl, so its markets move within seconds; since replicas publish
identical tick IDs, the stream stays free of gaps and duplicates meanwhile.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import redis

from common import held_keys, keys


def _score(market: str, observer: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{market}|{observer}".encode(), digest_size=8).digest(), "big")


def assign(markets: Sequence[str], observers: Sequence[str], replicas: int) -> dict[str, list[str]]:
    """Rendezvous hashing with bounded load: each market goes to its ``replicas`` highest-scoring
    observers that hold fewer than ``ceil(markets * replicas / observers)`` markets so far (markets
    taken in sorted order), so the markets are spread evenly (plain rendezvous hashing gave both markets
    of the demo to one of its two observers). Every observer computes the same answer from the same
    live list, and a change of the list moves few markets besides those of the observers that came or went."""
    r = min(replicas, len(observers))
    if r == 0:
        return {m: [] for m in markets}
    cap = -(-len(markets) * r // len(observers))
    load = dict.fromkeys(observers, 0)
    out: dict[str, list[str]] = {}
    for m in sorted(markets):
        ranked = sorted(observers, key=lambda o: _score(m, o), reverse=True)
        chosen = [o for o in ranked if load[o] < cap][:r]
        chosen += [o for o in ranked if o not in chosen][: r - len(chosen)]
        for o in chosen:
            load[o] += 1
        out[m] = chosen
    return out


class LeaseManager:
    def __init__(
        self,
        r: redis.Redis,
        observer_id: str,
        markets: Sequence[str],
        replicas: int,
        ttl_ms: int = 5000,
        handover_delay_ms: int | None = None,
    ) -> None:
        """``handover_delay_ms`` (default 2 x ttl): how long the other holders of a market this observer no
        longer wants must have held it, continuously, before it lets go (a newcomer takes its lease at start,
        before it is connected and publishing; a dead observer stays listed and holds its lease up to ttl)."""
        self.r = r
        self.me = observer_id
        self.markets = list(markets)
        self.replicas = max(1, replicas)
        self.ttl_ms = ttl_ms
        self.held: dict[str, int] = {}  # market -> slot
        self.handover_delay_ms = 2 * ttl_ms if handover_delay_ms is None else handover_delay_ms
        self._handover_since: dict[str, int] = {}  # market -> since when others have held it (ms)

    def live_observers(self, now_ms: int) -> list[str]:
        """Observers whose heartbeat is younger than ttl (they renew every ttl/4; always including this one)."""
        self.r.zremrangebyscore(keys.OBSERVERS_ZSET, 0, now_ms - self.ttl_ms)
        live = {m.decode() if isinstance(m, bytes) else str(m) for m in self.r.zrange(keys.OBSERVERS_ZSET, 0, -1)}
        live.add(self.me)
        return sorted(live)

    def renew(self, now_ms: int | None = None) -> set[str]:
        """Heartbeat, renew held slots, release unassigned ones, acquire assigned ones.

        Returns the markets this observer should watch now."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.r.zadd(keys.OBSERVERS_ZSET, {self.me: now_ms})
        for market, slot in list(self.held.items()):
            if not held_keys.renew(self.r, keys.lease_key(market, slot), self.me, self.ttl_ms):
                del self.held[market]  # expired and taken by someone else
        live = self.live_observers(now_ms)
        plan = assign(self.markets, live, self.replicas)
        wanted = {m for m, owners in plan.items() if self.me in owners}
        for market in sorted(set(self.held) - wanted):
            # hand a market over only once enough *other* live observers hold it: coverage never dips
            # while observers come and go (a new one may still be connecting, a dead one still listed)
            holders = self.r.mget([keys.lease_key(market, k) for k in range(self.replicas + 1)])
            others = {h.decode() for h in holders if h is not None and h.decode() != self.me} & set(live)
            if len(others) < min(self.replicas, len(live) - 1):
                self._handover_since.pop(market, None)
            elif now_ms - self._handover_since.setdefault(market, now_ms) >= self.handover_delay_ms:
                held_keys.release(self.r, keys.lease_key(market, self.held.pop(market)), self.me)
                self._handover_since.pop(market, None)
        for market in wanted & set(self._handover_since):
            del self._handover_since[market]
        for market in sorted(wanted - set(self.held)):
            # slots 0..replicas-1, then the one handover slot: with every slot held by observers the
            # assignment no longer wants, the newcomer takes it and they release (else nobody moves)
            for slot in range(self.replicas + 1):
                if self.r.set(keys.lease_key(market, slot), self.me, nx=True, px=self.ttl_ms):
                    self.held[market] = slot
                    break
        return set(self.held)

    def release_all(self) -> None:
        for market, slot in self.held.items():
            held_keys.release(self.r, keys.lease_key(market, slot), self.me)
        self.held.clear()
        self.r.zrem(keys.OBSERVERS_ZSET, self.me)
