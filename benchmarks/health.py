"""Cost of the alerting checks: one health-check round (``common.healthwatch``) against a private Redis with N markets
(states + labels streams with their groups) and service instances, and the observer's per-tick data-gap bookkeeping
(``observer_svc.market_alerts.GapMonitor``) for 20 markets."""

from __future__ import annotations

import statistics
import time
from typing import Any

from common import keys
from common.episodes import Episodes
from common.healthwatch import HealthWatch
from common.lifecycle import service_started
from common.redisproc import RedisServer
from common.schema import STALE_POLY
from common.settings import Settings
from common.streams import connect, ensure_groups
from observer_svc.market_alerts import GapMonitor


def _round(markets: int, entries: int) -> dict[str, Any]:
    srv = RedisServer().start()
    try:
        r = connect(srv.url)
        t0 = 1_800_000_000_000
        for i in range(markets):
            m = f"M{i}"
            r.sadd(keys.MARKETS_SET, m)
            r.set(keys.published_tick_key(m), t0)
            for s in (keys.states_stream(m), keys.labels_stream(m)):
                ensure_groups(r, s)
                pipe = r.pipeline(transaction=False)
                for j in range(entries):
                    pipe.xadd(s, {keys.PAYLOAD_FIELD: b"x"}, id=f"{t0 + 500 * j}-0")
                pipe.execute()
                r.xreadgroup(keys.ARCHIVER_GROUP, "a", {s: ">"}, count=entries // 2)  # half read, pending
        for i in range(min(markets, 50)):
            service_started("observer", f"obs-{i}", srv.url)
        w = HealthWatch(r, Settings().model_copy(), Episodes(r, notify=lambda *a, **k: True, enabled=lambda: True))
        times, cmds = [], []
        for _ in range(5):
            before = int(r.info("stats")["total_commands_processed"])
            t = time.perf_counter()
            found = w.run_once()
            times.append(time.perf_counter() - t)
            cmds.append(int(r.info("stats")["total_commands_processed"]) - before - 1)
        return {"round_ms": round(1000 * statistics.median(times), 2), "redis_commands": statistics.median(cmds),
                "findings": len(found)}  # fmt: skip
    finally:
        srv.close()


def _gap_monitor_us(markets: int = 20, ticks: int = 20_000) -> float:
    mon = GapMonitor(30_000, Episodes(None, notify=lambda *a, **k: True, enabled=lambda: False))
    names = [f"M{i}" for i in range(markets)]
    flags = [[(n, STALE_POLY if (t // 100) % 7 == 0 else 0) for n in names] for t in range(200)]
    t0 = time.perf_counter()
    for t in range(ticks):
        mon.on_tick(500 * t, flags[t % 200])
    return round(1e6 * (time.perf_counter() - t0) / ticks, 2)


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (10,) if quick else (10, 200)
    out: dict[str, Any] = {}
    for n in sizes:
        for k, v in _round(n, 200 if quick else 2_000).items():
            out[f"health_{n}_markets_{k}"] = v
    out["gap_monitor_20_markets_us_per_tick"] = _gap_monitor_us()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
