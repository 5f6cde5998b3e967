"""``fusion ui``: server-side render time and Redis / store calls per refresh of each page, for 10 and 200 markets.

A private redis-server holds N markets' states (20 minutes each, with both consumer groups), a trader status
and 2,000 trade records; a local store holds 3 archive objects per market and a registry of 5 versions.
Each page is rendered through the Flask app (the HTML fragment the browser polls): once cold, then ``refreshes``
times warm. Redis calls are counted two ways: round trips (commands + pipeline executions, by a counting client)
and commands (``INFO commandstats``, what the server executed); store calls by a counting store.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import redis

from archiver_svc.synth import synth_payloads
from archiver_svc.windows import object_key
from common import artefact as registry
from common import keys
from common.policy import architecture, init_weights, meta_features
from common.redisproc import RedisServer
from common.store import LocalStore, ObjectInfo, ObjectStore
from fusion.ui.app import PAGES, Collector, create_app


class CountingRedis(redis.Redis):
    """A client that counts round trips: each command, and each pipeline execution once."""

    round_trips = 0

    def execute_command(self, *args: Any, **kw: Any) -> Any:
        CountingRedis.round_trips += 1
        return super().execute_command(*args, **kw)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        p = super().pipeline(transaction, shard_hint)
        run = p.execute

        def execute(*a: Any, **kw: Any) -> Any:
            CountingRedis.round_trips += 1
            return run(*a, **kw)

        p.execute = execute  # type: ignore[method-assign]
        return p


class CountingStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.calls = inner, 0
        self.url = inner.url

    def put(self, key: str, data: bytes) -> None:
        self.calls += 1
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.calls += 1
        return self.inner.put_if_absent(key, data)

    def get(self, key: str) -> bytes:
        self.calls += 1
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        self.calls += 1
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Any:
        self.calls += 1
        items: list[ObjectInfo] = list(self.inner.list(prefix))
        return iter(items)

    def delete(self, key: str) -> None:
        self.calls += 1
        self.inner.delete(key)


def _commands(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def _populate(r: redis.Redis, store: ObjectStore, n_markets: int, n_states: int) -> None:
    now = int(time.time() * 1000) // 500 * 500
    start = now - n_states * 500
    for i in range(n_markets):
        m = f"M{i:03d}-5M"
        pipe = r.pipeline(transaction=False)
        for eid, payload in synth_payloads(m, start, n_states, seed=i):
            pipe.xadd(keys.states_stream(m), {keys.PAYLOAD_FIELD: payload}, id=eid)
        pipe.sadd(keys.MARKETS_SET, m)
        pipe.execute()
        for g in keys.STATES_GROUPS:
            r.xgroup_create(keys.states_stream(m), g, id="0")
        for w in range(3):
            store.put(object_key("states", m, start // 600_000 * 600_000 + w * 600_000), b"x")
    r.zadd(keys.OBSERVERS_ZSET, {"obs-1": now})
    pol = "bench"
    for v in range(5):
        meta = {**meta_features(), "architecture": architecture(), "holdout_metrics": {"pnl": v},
                "baselines_metrics": {"hold": {"pnl": 0}}, "decision": {"promote": v % 2 == 0, "reason": "r"},
                "training": {"history": [{"epoch": e, "loss": 1 / (e + 1)} for e in range(20)]}}  # fmt: skip
        registry.save_model(store, pol, init_weights(v), meta, version=f"v2026010{v}-000000-abcd")
    registry.promote(store, pol, "v20260100-000000-abcd")
    status = {"trader": "bench-1", "policy": pol, "markets": [], "model": "v", "running": True,
              "pnl": {"equity_usd": 1.0, "realised_usd": 1.0, "unrealised_usd": 0.0, "day_pnl_usd": 0.0, "fees": 0.0,
                      "fills": 0, "refused": 0, "kill_switch": False, "kill_trips": 0, "positions": {}}}  # fmt: skip
    r.set(keys.trader_status_key("bench-1"), json.dumps(status))
    pipe = r.pipeline(transaction=False)
    for k in range(2000):
        rec = {"type": "fill", "trader": "bench-1", "market": "M000-5M", "kind": "open" if k % 2 == 0 else "close",
               "side": "up", "fill_tick": start + k * 500, "shares": 1.0, "avg_px": 0.5, "fee": 0.01,
               "realised": 0.0 if k % 2 == 0 else 0.1, "model": "v"}  # fmt: skip
        pipe.xadd(keys.TRADES_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(rec)})
    pipe.execute()


def _measure(n_markets: int, n_states: int, refreshes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        srv = RedisServer(workdir=str(Path(tmp) / "redis")).start()
        try:
            admin = redis.Redis.from_url(srv.url)
            inner = LocalStore(Path(tmp) / "store")
            _populate(admin, inner, n_markets, n_states)
            r = CountingRedis.from_url(srv.url)
            store = CountingStore(inner)
            col = Collector(r, store, cache_s=30.0)
            client = create_app(col).test_client()
            out: dict[str, Any] = {}
            for page in PAGES:
                row: dict[str, Any] = {}
                for phase, n in (("cold", 1), ("warm", refreshes)):
                    times, trips, cmds, scalls = [], [], [], []
                    for _ in range(n):
                        CountingRedis.round_trips, store.calls = 0, 0
                        admin.config_resetstat()
                        t0 = time.perf_counter()
                        res = client.get(f"/{page}?fragment=1")
                        times.append((time.perf_counter() - t0) * 1000)
                        assert res.status_code == 200 and b"error" not in res.data[:2000], res.data[:500]
                        trips.append(CountingRedis.round_trips)
                        cmds.append(_commands(admin))
                        scalls.append(store.calls)
                    row[phase] = {"render_ms": round(statistics.median(times), 1), "redis_round_trips": max(trips),
                                  "redis_commands": max(cmds), "store_calls": max(scalls)}  # fmt: skip
                out[page] = row
            admin.close()
            r.close()
            return out
        finally:
            srv.close()


def run(quick: bool = False) -> dict[str, Any]:
    refreshes = 3 if quick else 10
    n_states = 600 if quick else 2400
    return {f"{n}_markets": _measure(n, n_states, refreshes) for n in (10, 200)} | {
        "states_per_market": n_states, "page_size_markets": 50, "refreshes": refreshes}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
