"""The training schedule (as the seed's cron did): per market, enqueue a training job when ``every_h``
hours have passed since the last one or ``after_states`` new labels were added to the market's labels
stream (``XINFO STREAM``'s monotonic ``entries-added``, which trimming does not reduce).

State per market lives in the hash ``common.keys.SCHEDULE_KEY`` (fields ``{market}:ts`` and
``{market}:labels``), so a restarted scheduler carries on. A refused enqueue (a job already running)
is not an error: the next poll tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from common import keys
from common.log import kv, log_once

log = logging.getLogger("trainer.schedule")


def labels_added(r: Any, market: str) -> int:
    try:
        info = r.xinfo_stream(keys.labels_stream(market))
    except Exception:  # no stream yet
        return 0
    return int(info.get("entries-added", info.get("length", 0)) or 0)


def due(r: Any, market: str, every_h: float, after_states: int, now: float | None = None) -> tuple[bool, str]:
    now = time.time() if now is None else now
    if not r.hexists(keys.SCHEDULE_KEY, f"{market}:ts"):
        # first sight of this market: start its clock; never train on an empty store at start-up
        r.hset(keys.SCHEDULE_KEY, mapping={f"{market}:ts": now, f"{market}:labels": 0})
    last_ts = float(r.hget(keys.SCHEDULE_KEY, f"{market}:ts") or 0)
    last_n = int(r.hget(keys.SCHEDULE_KEY, f"{market}:labels") or 0)
    added = labels_added(r, market)
    if every_h > 0 and now - last_ts >= every_h * 3600:
        return True, f"{(now - last_ts) / 3600:.1f} h since the last training"
    if after_states > 0 and added - last_n >= after_states:
        return True, f"{added - last_n} new labelled states"
    return False, ""


def tick(r: Any, markets: Sequence[str], algo: str, every_h: float, after_states: int) -> list[str]:
    """One scheduling pass; returns the ids of the jobs enqueued."""
    from trainer_svc.jobs import AlreadyRunning, enqueue_training
    from trainer_svc.jobspec import InvalidJob

    out = []
    for m in markets:
        ok, why = due(r, m, every_h, after_states)
        if not ok:
            continue
        try:
            job = enqueue_training(r, {"market": m, "algo": algo})
        except AlreadyRunning as e:
            kv(log, logging.INFO, "training due but one is running", market=m, job=e.job_id)
            continue
        except InvalidJob as e:  # a bad market name: never enqueued, logged once
            log_once(log, f"schedule-invalid:{m!r}", "training job refused", reason=str(e))
            continue
        r.hset(keys.SCHEDULE_KEY, mapping={f"{m}:ts": time.time(), f"{m}:labels": labels_added(r, m)})
        kv(log, logging.INFO, "training enqueued", market=m, job=job.id, reason=why)
        out.append(job.id)
    return out


def run_schedule(
    r: Any, markets: Sequence[str], algo: str, every_h: float, after_states: int, poll_s: float, once: bool = False
) -> None:
    while True:
        tick(r, markets, algo, every_h, after_states)
        if once:
            return
        time.sleep(poll_s)
