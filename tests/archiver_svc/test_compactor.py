"""Compaction as a service (`fusion compact --every S`, compose `compactor`): passes until SIGTERM, a failing
pass is counted and retried, a pass over an unchanged archive writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from archiver_svc import columnar, compactor
from archiver_svc.compact import Result, compact
from common.metrics import snapshot
from common.redisproc import free_port
from common.store import LocalStore
from tests.archiver_svc.test_compact import DAY, LATER, M, _archive
from tests.wait import wait_until


def test_passes_retry_after_a_failure_and_rewrite_nothing_when_current(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _archive(store)
    stop = threading.Event()
    results: list[Result] = []

    def one_pass() -> Result:
        if not results:
            results.append(Result())
            raise ConnectionError("store unreachable")  # the first pass fails
        results.append(compact(store, now_ms=LATER))
        if len(results) == 3:
            stop.set()
        return results[-1]

    before = snapshot()
    assert compactor.run(one_pass, 0.01, stop) == 1
    after = snapshot()
    assert sorted(results[1].written) == [f"labels/{M}/{DAY}", f"states/{M}/{DAY}"]
    assert results[2].written == [] and len(results[2].skipped) == 2

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew("fusion_compact_runs_total{result=error}") == 1 and grew("fusion_compact_runs_total{result=ok}") == 2
    assert grew("fusion_compact_rows_total") == 400 and grew("fusion_compact_days_total{result=written}") == 2


def test_service_compacts_closed_days_serves_metrics_and_stops_on_sigterm(tmp_path: Path, redis_url: str) -> None:
    store = LocalStore(tmp_path / "store")
    _archive(store)  # days of 2025: closed long ago
    port = free_port()
    env = dict(os.environ, FUSION_REDIS_URL=redis_url, FUSION_METRICS_PORT=str(port), PYTHONPATH=os.getcwd())
    argv = [sys.executable, "-m", "fusion.cli", "compact", "--every", "1", "--store", str(tmp_path / "store")]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        key = columnar.day_key("states", M, DAY, columnar.MANIFEST)
        wait_until(lambda: (tmp_path / "store" / key).exists(), 30, "the compactor wrote the day's manifest")

        def runs() -> float:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return 0.0
            line = [x for x in text.splitlines() if x.startswith('fusion_compact_runs_total{result="ok"}')]
            return float(line[0].split()[-1]) if line else 0.0

        wait_until(lambda: runs() >= 2, 30, "two passes")
        mtime = (tmp_path / "store" / key).stat().st_mtime_ns
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        assert (tmp_path / "store" / key).stat().st_mtime_ns == mtime  # later passes skipped the current day
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
