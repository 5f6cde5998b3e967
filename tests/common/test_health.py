"""Health alerts against a real Redis and a real local HTTP receiver: consumer lag, Redis memory, restart loops and
stalled streams each reach the receiver once per episode with the right content when their condition holds, not
when it does not, and a "recovered" note when it ends; episodes are shared between processes (replicas); a refusing
receiver changes nothing else."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import redis

from common import health, keys
from common.alerts import AlertSink
from common.episodes import Episodes
from common.healthwatch import HealthWatch, group_lags
from common.lifecycle import service_started
from common.settings import Settings
from common.streams import ensure_groups
from tests.common.test_alerts import Receiver


def _sink_episodes(r: redis.Redis, url: str) -> tuple[AlertSink, Episodes]:
    sink = AlertSink(url, "json", service="health", dedup_s=3600, rate_per_min=1000)
    return sink, Episodes(r, notify=sink.send, enabled=lambda: True)


def _settings(**kw: object) -> Settings:
    base = dict(alert_lag_s=60.0, alert_lag_entries=0, alert_redis_memory_pct=80.0, alert_redis_memory_bytes=0,
                alert_restart_count=3, alert_restart_window_s=600.0, alert_stall_s=5.0)  # fmt: skip
    return Settings().model_copy(update=base | kw)


def _states(r: redis.Redis, market: str, ticks: list[int]) -> str:
    s = keys.states_stream(market)
    ensure_groups(r, s)
    for t in ticks:
        r.xadd(s, {keys.PAYLOAD_FIELD: b"x"}, id=f"{t}-0")
    return s


def test_pure_checks_hold_and_do_not_hold() -> None:
    lag = [health.GroupLag("s", "archiver", 61_000, 3, 0), health.GroupLag("s", "labeler", 59_000, 10, 0)]
    assert [f.key for f in health.check_lag(lag, 60, 0)] == ["s/archiver"]
    assert [f.key for f in health.check_lag(lag, 600, 10)] == ["s/labeler"]
    assert health.check_memory({"used_memory": 79, "maxmemory": 100}, 80, 0) == []
    assert health.check_memory({"used_memory": 81, "maxmemory": 100}, 80, 0)[0].fields["pct"] == 81.0
    assert health.check_memory({"used_memory": 10**9, "maxmemory": 0}, 80, 0) == []  # no maxmemory: off
    assert health.check_memory({"used_memory": 10**9, "maxmemory": 0}, 80, 10**8)[0].key == "redis"
    st = {"archiver/a1": [1_000, 2_000, 3_000], "labeler/l1": [1_000, 500_000]}
    assert [f.key for f in health.check_restarts(st, 10_000, 3, 60)] == ["archiver/a1"]
    assert health.check_restarts(st, 100_000, 3, 60) == []  # the starts left the window
    assert [f.key for f in health.check_stalled({"A": (1, 9.0), "B": (1, 1.0)}, 5)] == ["A"]


def test_lag_memory_restarts_alert_once_per_episode_then_recover(r: redis.Redis, redis_url: str) -> None:
    rc = Receiver()
    try:
        sink, ep = _sink_episodes(r, rc.url)
        s = _states(r, "LAG-A", [1_000_000 + 500 * i for i in range(300)])  # 149.5 s of ticks
        r.xreadgroup(keys.LABELER_GROUP, "l1", {s: ">"})
        r.xack(s, keys.LABELER_GROUP, *[e for e, _ in r.xrange(s)])  # the labeler is up to date
        r.xreadgroup(keys.ARCHIVER_GROUP, "a1", {s: ">"}, count=10)  # the archiver read 10, acked none
        (arch,) = [g for g in group_lags(r) if g.group == keys.ARCHIVER_GROUP]
        assert arch.behind_ms == 149_500 and arch.unread == 290 and arch.pending == 10
        for _ in range(3):
            assert service_started("archiver", "arch-1", redis_url)
        assert service_started("labeler", "lab-1", redis_url)
        r.config_set("maxmemory", str(int(r.info("memory")["used_memory"] * 1.1)))
        w = HealthWatch(r, _settings(), ep)
        found = w.run_once()
        assert sorted((f.kind, f.key) for f in found) == [
            ("consumer-lag", f"{s}/archiver"),
            ("redis-memory", "redis"),
            ("restart-loop", "archiver/arch-1"),
        ]
        w.run_once()  # the same episodes: nothing new
        assert sink.flush(10)
        got = {b["kind"]: b for b in rc.bodies}
        assert len(rc.bodies) == 3 and set(got) == {"consumer-lag", "redis-memory", "restart-loop"}
        lag = got["consumer-lag"]
        assert lag["key"] == f"{s}/archiver" and lag["fields"]["behind_s"] == 149.5 and lag["fields"]["unread"] == 290
        assert got["restart-loop"]["fields"]["starts"] == 3 and got["restart-loop"]["fields"]["instance"] == "arch-1"
        assert got["redis-memory"]["fields"]["pct"] >= 80
        # the conditions end: the archiver catches up, memory is unlimited, the restarts age out of the window
        r.xreadgroup(keys.ARCHIVER_GROUP, "a1", {s: ">"})
        r.xack(s, keys.ARCHIVER_GROUP, *[e for e, _ in r.xrange(s)])
        r.config_set("maxmemory", "0")
        assert HealthWatch(r, _settings(alert_restart_window_s=0.001), ep).run_once() == []
        assert sink.flush(10)
        rec = sorted(b["kind"] for b in rc.bodies[3:])
        assert rec == ["consumer-lag-recovered", "redis-memory-recovered", "restart-loop-recovered"]
        assert all(b["fields"]["gap_s"] >= 0 for b in rc.bodies[3:])
    finally:
        r.config_set("maxmemory", "0")
        rc.close()


def test_healthy_system_sends_nothing(r: redis.Redis, redis_url: str) -> None:
    rc = Receiver()
    try:
        sink, ep = _sink_episodes(r, rc.url)
        s = _states(r, "OK-A", [2_000_000 + 500 * i for i in range(50)])
        for g in keys.STATES_GROUPS:
            r.xreadgroup(g, "c", {s: ">"})
            r.xack(s, g, *[e for e, _ in r.xrange(s)])
        service_started("archiver", "arch-ok", redis_url)
        service_started("archiver", "arch-ok", redis_url)  # 2 < 3 starts
        assert HealthWatch(r, _settings(), ep).run_once() == []
        assert sink.flush(5) and rc.bodies == []
    finally:
        rc.close()


def test_stalled_stream_and_episodes_shared_by_two_processes(r: redis.Redis) -> None:
    rc = Receiver()
    try:
        sink, ep = _sink_episodes(r, rc.url)
        _, ep2 = _sink_episodes(r, rc.url)  # a second process: its own sink, the same Redis
        ep2.notify = sink.send  # (one receiver counts both)
        r.sadd(keys.MARKETS_SET, "ST-A", "ST-B")
        r.set(keys.published_tick_key("ST-A"), 1_000)
        r.set(keys.published_tick_key("ST-B"), 1_000)
        now = [100.0]
        w = HealthWatch(r, _settings(alert_stall_s=5.0), ep, clock=lambda: now[0])
        w2 = HealthWatch(r, _settings(alert_stall_s=5.0), ep2, clock=lambda: now[0])
        assert w.run_once() == [] and w2.run_once() == []
        now[0] += 3
        r.set(keys.published_tick_key("ST-B"), 1_500)  # B moves, A does not
        assert w.run_once() == [] and w2.run_once() == []
        now[0] += 3
        assert [f.key for f in w.run_once()] == ["ST-A"] and [f.key for f in w2.run_once()] == ["ST-A"]
        assert sink.flush(10)
        assert [(b["kind"], b["key"]) for b in rc.bodies] == [("stream-stalled", "ST-A")]  # once, not twice
        assert rc.bodies[0]["fields"]["stalled_s"] == 6.0 and rc.bodies[0]["fields"]["last_tick_ms"] == 1_000
        w3 = HealthWatch(r, _settings(alert_stall_s=5.0), ep, clock=lambda: now[0])  # a new leader
        assert w3.run_once() == [] and ep.open_keys("stream-stalled") == {"ST-A"}  # not over: it never saw A move
        r.set(keys.published_tick_key("ST-A"), 2_000)
        w2.run_once()
        w.run_once()
        assert sink.flush(10)
        assert [b["kind"] for b in rc.bodies] == ["stream-stalled", "stream-stalled-recovered"]
    finally:
        rc.close()


def test_refusing_receiver_changes_nothing_else(r: redis.Redis, redis_url: str) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    sink = AlertSink(f"http://127.0.0.1:{port}/x", rate_per_min=1000)
    ep = Episodes(r, notify=sink.send, enabled=lambda: True)
    for _ in range(3):
        service_started("labeler", "lab-dead", redis_url)
    t0 = time.perf_counter()
    found = HealthWatch(r, _settings(), ep).run_once()
    assert time.perf_counter() - t0 < 2.0 and [f.kind for f in found] == ["restart-loop"]
    assert sink.flush(10) and sink.counts == {"failed": 1}
    assert ep.open_keys("restart-loop") == {"labeler/lab-dead"}  # the episode is recorded all the same


def test_fusion_health_command(r: redis.Redis, redis_url: str) -> None:
    env_ok = subprocess.run([sys.executable, "-m", "fusion.cli", "health"], capture_output=True, text=True,
                            timeout=60, env={**_env(redis_url)})  # fmt: skip
    assert env_ok.returncode == 0 and "healthy" in env_ok.stdout, env_ok.stderr
    for _ in range(5):
        service_started("trader", "paper-9", redis_url)
    bad = subprocess.run([sys.executable, "-m", "fusion.cli", "health", "--json"], capture_output=True, text=True,
                         timeout=60, env=_env(redis_url))  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert '"kind": "restart-loop"' in bad.stdout and '"key": "trader/paper-9"' in bad.stdout


def _env(redis_url: str) -> dict[str, str]:
    import os

    return {**os.environ, "FUSION_REDIS_URL": redis_url}


def test_redis_out_of_memory_refusing_writes_is_still_alerted_and_recovered(r: redis.Redis) -> None:
    rc = Receiver()
    try:
        sink, ep = _sink_episodes(r, rc.url)
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1")  # every write refused (OOM), the episode cannot be stored in Redis
        found = HealthWatch(r, _settings(), ep).run_once()
        assert [f.kind for f in found] == ["redis-memory"] and found[0].fields["pct"] > 100
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            r.set("x", 1)
        again = HealthWatch(r, _settings(), ep).run_once()  # still open: found again, but no second alert (below)
        assert [(f.kind, f.key) for f in again] == [("redis-memory", "redis")]
        r.config_set("maxmemory", "0")
        assert HealthWatch(r, _settings(), ep).run_once() == []
        assert sink.flush(10)
        assert [b["kind"] for b in rc.bodies] == ["redis-memory", "redis-memory-recovered"]
    finally:
        r.config_set("maxmemory", "0")
        rc.close()
