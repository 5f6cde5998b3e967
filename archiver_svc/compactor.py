"""``fusion compact --every S``: compaction as a service (compose ``compactor``), one pass every ``S`` seconds.

Each pass is :func:`archiver_svc.compact.compact` over every archived market and trader: it writes the days that
closed since the last pass and skips the current ones (the manifest check), so a pass after a restart or a crash
repairs what the interrupted one left, and a pass over an unchanged archive writes nothing.

Guarantees: a day that fails is counted (``fusion_compact_days_total{result="failed"}``), logged once and retried by
the next pass while the other days go on; a failing pass (store unreachable, a listing error) is logged once per
kind of error, counted (``fusion_compact_runs_total{result="error"}``) and retried at the next pass; neither stops
the service. SIGTERM
or SIGINT ends it between passes (a pass in progress finishes its current day, at most a few seconds).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from archiver_svc.compact_result import Result
from common.log import kv, log_once
from common.metrics import counter, gauge

log = logging.getLogger("archiver.compactor")


RUNS = counter("fusion_compact_runs_total", "compaction passes", ("result",))
DAYS = counter("fusion_compact_days_total", "days seen by compaction passes", ("result",))
ROWS = counter("fusion_compact_rows_total", "rows written into columnar files")
PROBLEMS = counter("fusion_compact_problems_total", "bad windows or entries reported (quarantined, skipped)")
LAST_OK = gauge("fusion_compact_last_success_timestamp_seconds", "end of the last successful pass (unix s)")
PASS_SECONDS = gauge("fusion_compact_pass_seconds", "duration of the last successful pass")


def record(res: Result) -> None:
    """Count one successful pass."""
    RUNS.labels("ok").inc()
    DAYS.labels("written").inc(len(res.written))
    DAYS.labels("skipped").inc(len(res.skipped))
    DAYS.labels("open").inc(len(res.open_days))
    DAYS.labels("failed").inc(len(res.failed))
    ROWS.inc(res.rows)
    PROBLEMS.inc(len(res.problems))
    LAST_OK.set(time.time())
    PASS_SECONDS.set(res.seconds)


def run(one_pass: Callable[[], Result], every_s: float, stop: threading.Event) -> int:
    """Run ``one_pass`` now and then every ``every_s`` seconds until ``stop``; returns the passes that failed."""
    failed = 0
    while not stop.is_set():
        try:
            res = one_pass()
        except Exception as e:  # the store or a listing failed: next pass
            failed += 1
            RUNS.labels("error").inc()
            log_once(log, f"pass:{type(e).__name__}", "compaction pass failed; retried at the next pass",
                     error=f"{type(e).__name__}: {str(e)[:200]}")  # fmt: skip
        else:
            record(res)
            if res.written or res.problems or res.failed:
                kv(log, logging.INFO, "compaction pass", written=len(res.written), problems=len(res.problems),
                   failed=len(res.failed), rows=res.rows, seconds=round(res.seconds, 2))  # fmt: skip
        stop.wait(every_s)
    return failed


def serve(one_pass: Callable[[], Result], every_s: float) -> int:
    """The service around :func:`run`: metrics endpoint, start recorded (restart loops are alerted), signals."""
    from common.lifecycle import default_instance, service_started
    from common.metrics import serve_metrics
    from common.settings import get_settings

    s = get_settings()
    serve_metrics(s.metrics_port)
    service_started("compactor", default_instance(), s.redis_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kv(log, logging.INFO, "compactor started", every_s=every_s)
    run(one_pass, every_s, stop)
    return 0
