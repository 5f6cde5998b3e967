"""Every observer shows on the dashboard, whichever mode it runs in (the table was empty without leases)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from common import keys
from common.markets import parse_market
from common.settings import Settings
from observer_svc import presence
from observer_svc.service import Observer
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread


def test_a_fixed_market_observer_is_listed_while_it_runs_and_not_after(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence, "BEAT_S", 0.5)  # beats sooner than in production (2 s); the same code path
    drv = SyntheticDriver(["BTC-5M"], seed=1, speed=1.0)
    seen: list[list[dict[str, object]]] = []
    with SimServerThread(drv) as sim:
        s = Settings(redis_url=redis_url, sim_url=sim.url, feed="sim")  # type: ignore[call-arg]
        obs = Observer(s, [parse_market("BTC-5M")], observer_id="obs-fixed-1")

        async def main() -> None:
            task = asyncio.create_task(obs.run(duration_s=30))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # a beat after the first ticks (the first beat is at start)
                rows = presence.observers(r, int(time.time() * 1000))
                if rows and int(rows[0].get("ticks", 0)) > 0:  # type: ignore[call-overload]
                    seen.append(rows)
                    break
                await asyncio.sleep(0.1)
            obs.stop()
            await task

        asyncio.run(main())
    assert seen, "no presence with ticks within 20 s"
    (row,) = seen[0]
    assert row["id"] == "obs-fixed-1" and row["mode"] == "fixed" and row["markets"] == ["BTC-5M"]
    assert isinstance(row["ticks"], int) and row["ticks"] > 0 and float(row["age_s"]) <= presence.TTL_S  # type: ignore[arg-type]
    assert presence.observers(r, int(time.time() * 1000)) == []  # a clean stop leaves no trace
    assert not r.exists(keys.observer_presence_key("obs-fixed-1"))
    assert r.zcard(keys.OBSERVERS_ZSET) == 0  # not a candidate for leased markets


def test_silent_observers_age_out_and_bad_values_never_break_the_table(r: redis.Redis) -> None:
    now = int(time.time() * 1000)
    what = presence.report(["A-5M"], "leases", 3, now, 3, 0, now)
    presence.beat(r, "dead", what, now - 60_000)  # SIGKILLed a minute ago: its value expired, its id stays
    presence.beat(r, "alive", what, now)  # any beat prunes ids silent for over the TTL
    assert r.zscore(keys.OBSERVERS_SEEN_ZSET, "dead") is None
    r.zadd(keys.OBSERVERS_SEEN_ZSET, {"garbage": now, "listy": now, "novalue": now})
    r.set(keys.observer_presence_key("garbage"), b"\xff{not json")
    r.set(keys.observer_presence_key("listy"), '{"markets": "A-5M", "ticks": true, "mode": ["x"]}')
    rows = {o["id"]: o for o in presence.observers(r, now)}
    assert rows["alive"]["markets"] == ["A-5M"] and rows["alive"]["mode"] == "leases"
    assert rows["garbage"] == {"id": "garbage", "age_s": 0.0}
    assert rows["listy"] == {"id": "listy", "age_s": 0.0}  # wrong types are left out, not shown
    assert rows["novalue"] == {"id": "novalue", "age_s": 0.0}
