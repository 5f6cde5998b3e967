"""A service started repeatedly is alerted as a restart loop by the health checker running inside a real labeler
process, and the alert lands in the file of the local receiver the demo can use (``fusion alerts listen``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from common import keys
from fusion.alert_receiver import AlertReceiver, read_alerts
from tests.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


_wait = wait_until


def test_restart_loop_of_a_real_labeler_reaches_the_receiver(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    rc = AlertReceiver(tmp_path / "alerts.jsonl").start()
    env = {**os.environ, "FUSION_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "FUSION_ALERT_WEBHOOK_URL": rc.url,
           "FUSION_ALERT_RESTART_COUNT": "3", "FUSION_ALERT_HEALTH_EVERY_S": "0.5"}  # fmt: skip
    starts = keys.service_starts_key("labeler", "lab-loop")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            p = subprocess.Popen([sys.executable, "-m", "fusion.cli", "label", "--consumer", "lab-loop"], env=env,
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(p)
            _wait(lambda n=i + 1: r.zcard(starts) >= n, 60, f"start {i + 1} recorded")
            if i < 2:
                time.sleep(1.0)  # its checker ran: fewer than 3 starts, nothing to say
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        assert read_alerts(rc.path) == []
        _wait(lambda: any(a.get("kind") == "restart-loop" for a in read_alerts(rc.path)), 60, "the restart-loop alert")
        time.sleep(1.5)  # more rounds of the checker: the same episode, no second alert
        assert procs[-1].poll() is None  # the service keeps running
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        rc.close()
    got = [a for a in read_alerts(rc.path) if a.get("kind") == "restart-loop"]
    assert len(got) == 1, got
    a = got[0]
    assert a["key"] == "labeler/lab-loop" and a["fields"]["starts"] == 3 and a["service"] == "labeler/lab-loop"
    assert a["text"].startswith("labeler/lab-loop started 3 times") and a["received_ms"] > 0
