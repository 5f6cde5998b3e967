"""Per-market alerts of the observer against a real Redis and a real local HTTP receiver: a data gap is alerted once
per episode with its length and recovered once; replicas share episodes; discovery failures are alerted per market.
The slow test runs a real observer process against the simulator: the Polymarket feed of one market goes silent
(a data gap, then its recovery) and a fixed market that does not exist is a discovery failure, while the observer
keeps publishing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from common import keys
from common.alerts import AlertSink
from common.episodes import Episodes
from common.schema import NO_PM_MARKET, STALE_POLY
from observer_svc.market_alerts import DiscoveryMonitor, GapMonitor
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread
from tests.common.test_alerts import Receiver
from tests.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


_wait = wait_until


def test_gap_alerted_once_with_its_length_and_recovered_once_across_replicas(r: redis.Redis) -> None:
    rc = Receiver()
    try:
        sink = AlertSink(rc.url, dedup_s=3600, rate_per_min=1000)
        a = GapMonitor(10_000, Episodes(r, notify=sink.send, enabled=lambda: True))
        b = GapMonitor(10_000, Episodes(r, notify=sink.send, enabled=lambda: True))  # a replica
        t0 = 1_800_000_000_000
        for i in range(60):  # 30 s of ticks: M1 good for 5 s, then stale for 20 s, then good; M2 always good
            t = t0 + 500 * i
            f = STALE_POLY if 10 <= i < 50 else 0
            for mon in (a, b):
                mon.on_tick(t, [("M1", f | (NO_PM_MARKET if i == 40 else 0)), ("M2", 0)])
        for mon in (a, b):
            mon.ep.drain()
        assert sink.flush(10)
        got = [(x["kind"], x["key"]) for x in rc.bodies]
        assert got == [("data-gap", "M1"), ("data-gap-recovered", "M1")], got
        gap, rec = rc.bodies
        assert gap["fields"]["since_ms"] == t0 + 5_000 and gap["fields"]["gap_s"] == 10.0
        assert gap["fields"]["missing"] == ["stale_poly"] and gap["fields"]["market"] == "M1"
        assert rec["fields"]["gap_s"] == 20.0  # ticks 10..49 bad, tick 50 good: 20 s of tick time
        # a new episode later is alerted again
        for i in range(60, 90):
            a.on_tick(t0 + 500 * i, [("M1", STALE_POLY)])
        a.ep.drain()
        assert sink.flush(10) and [x["kind"] for x in rc.bodies[2:]] == ["data-gap"]
    finally:
        rc.close()


def test_alerts_off_touch_nothing(r: redis.Redis) -> None:
    sent: list[str] = []
    mon = GapMonitor(1_000, Episodes(r, notify=lambda *a, **k: sent.append(a[0]) or True, enabled=lambda: False))
    for i in range(20):
        mon.on_tick(500 * i, [("M1", STALE_POLY)])
    mon.on_tick(20_000, [("M1", 0)])
    assert sent == [] and r.exists(keys.ALERT_EPISODES) == 0


def test_discovery_failure_once_then_recovered(r: redis.Redis) -> None:
    rc = Receiver()
    try:
        sink = AlertSink(rc.url, dedup_s=3600, rate_per_min=1000)
        ep = Episodes(r, notify=sink.send, enabled=lambda: True)
        d = DiscoveryMonitor(ep)
        d.found("M1", "m1-window-1")  # nothing open: nothing sent
        for _ in range(5):
            d.failed("M1", "GET http://gamma/events: HTTP 503 (after 4 attempts)", start_s=1)
        d.found("M1", "m1-window-2")
        ep.drain()
        assert sink.flush(10)
        assert [(x["kind"], x["key"]) for x in rc.bodies] == [("discovery-failed", "M1"),
                                                              ("discovery-failed-recovered", "M1")]  # fmt: skip
        assert "HTTP 503" in rc.bodies[0]["fields"]["reason"] and rc.bodies[1]["fields"]["slug"] == "m1-window-2"
    finally:
        rc.close()


@pytest.mark.slow
def test_observer_process_alerts_a_silent_feed_and_a_missing_market(r: redis.Redis, redis_url: str,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    rc = Receiver()
    drv = SyntheticDriver(["BTC-15M"], seed=7, speed=10.0)
    with SimServerThread(drv) as sim:
        env = {**os.environ, "FUSION_REDIS_URL": redis_url, "FUSION_SIM_URL": sim.url, "FUSION_FEED": "sim",
               "PYTHONPATH": str(ROOT), "FUSION_ALERT_WEBHOOK_URL": rc.url, "FUSION_STALE_POLY_MS": "3000",
               "FUSION_ALERT_GAP_S": "10", "FUSION_OBSERVER_ID": "obs-alerts"}  # fmt: skip
        out = open(tmp_path / "obs.out", "wb")  # noqa: SIM115 (the process writes it while it runs)
        proc = subprocess.Popen([sys.executable, "-m", "fusion.cli", "observe", "--market", "BTC-15M", "--market",
                                 "GONE=slug:no-such-market@BTCUSDT"], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        stream = keys.states_stream("BTC-15M")
        try:
            _wait(lambda: r.xlen(stream) >= 40, 60, "states")
            _wait(lambda: any(b["kind"] == "discovery-failed" for b in rc.bodies), 60, "the discovery alert")
            time.sleep(1.0)
            assert not any(b["key"] == "BTC-15M" for b in rc.bodies)  # a healthy market: nothing
            resp = httpx.get(f"{sim.url}/sim/control", params={"poly_silence_s": 60}, timeout=10)
            assert resp.status_code == 200
            _wait(lambda: any(b["kind"] == "data-gap" and b["key"] == "BTC-15M" for b in rc.bodies), 60, "data-gap")
            _wait(lambda: any(b["kind"] == "data-gap-recovered" for b in rc.bodies), 60, "recovery")
            n = r.xlen(stream)
            _wait(lambda: r.xlen(stream) > n + 20, 30, "states after the gap")  # the observer kept working
        finally:
            proc.terminate()
            proc.wait(30)
            out.close()
            rc.close()
    by = {(b["kind"], b["key"]): b for b in rc.bodies}
    disc = by[("discovery-failed", "GONE")]
    assert "no window found" in disc["fields"]["reason"] and disc["service"] == "observer/obs-alerts"
    gap, rec = by[("data-gap", "BTC-15M")], by[("data-gap-recovered", "BTC-15M")]
    assert "stale_poly" in gap["fields"]["missing"] and gap["fields"]["gap_s"] >= 10
    assert 40 <= rec["fields"]["gap_s"] <= 80  # 60 s of silence, less the 3 s before data counts as stale
    assert sum(1 for b in rc.bodies if b["kind"] == "data-gap" and b["key"] == "BTC-15M") == 1
    assert r.hget(keys.ALERT_EPISODES, "data-gap|BTC-15M") is None  # closed
    assert r.zcard(keys.service_starts_key("observer", "obs-alerts")) == 1


@pytest.mark.slow
def test_observer_with_a_hanging_receiver_publishes_as_without_alerts(r: redis.Redis, redis_url: str,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    import socket

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # accepts, never answers: every POST waits for its timeout
    drv = SyntheticDriver(["BTC-15M"], seed=8, speed=10.0)
    try:
        with SimServerThread(drv) as sim:
            url = f"http://127.0.0.1:{hang.getsockname()[1]}/x"
            env = {**os.environ, "FUSION_REDIS_URL": redis_url, "FUSION_SIM_URL": sim.url, "FUSION_FEED": "sim",
                   "PYTHONPATH": str(ROOT), "FUSION_ALERT_WEBHOOK_URL": url, "FUSION_STALE_POLY_MS": "3000",
                   "FUSION_ALERT_GAP_S": "2", "FUSION_ALERT_TIMEOUT_S": "30"}  # fmt: skip
            out = open(tmp_path / "obs.out", "wb")  # noqa: SIM115 (the process writes it while it runs)
            proc = subprocess.Popen([sys.executable, "-m", "fusion.cli", "observe", "--market", "BTC-15M"], env=env,
                                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            stream = keys.states_stream("BTC-15M")
            try:
                _wait(lambda: r.xlen(stream) >= 40, 60, "states")
                httpx.get(f"{sim.url}/sim/control", params={"poly_silence_s": 30}, timeout=10)
                _wait(lambda: r.hexists(keys.ALERT_EPISODES, "data-gap|BTC-15M"), 60, "the gap's episode")
                n = r.xlen(stream)
                _wait(lambda: r.xlen(stream) > n + 100, 60, "states while alerts hang")
            finally:
                proc.terminate()
                proc.wait(30)
                out.close()
    finally:
        hang.close()
    assert proc.returncode == 0, (tmp_path / "obs.out").read_text()[-2000:]
    ticks = [int(e.split(b"-")[0]) for e, _ in r.xrange(stream)]
    assert all(b - a == 500 for a, b in zip(ticks, ticks[1:], strict=False))  # gap-free: no tick was late or lost
