"""RQ training jobs: enqueue with a per-policy lock, the job function, progress in ``job.meta``.

* Queue ``training`` (``common.keys.TRAINING_QUEUE``), job timeout 2 h (RQ's default 180 s would kill
  training; never -1), ``Retry(max=3, interval=[10, 30, 60])`` (needs a worker with the scheduler),
  results kept a day.
* One job per policy: enqueue sets ``common.keys.training_lock_key(policy)`` = job id with ``SET NX``
  (TTL covering every retry); a second enqueue while that job is queued, scheduled or running is
  refused with :class:`AlreadyRunning`. A lock whose job has finished, failed or vanished is stale and
  is taken over atomically (WATCH). The job id is unique (``unique=True``) too.
* Jobs are stored as JSON (``trainer_svc.jobspec.JobSerializer``: never pickle) and carry validated
  :class:`~trainer_svc.jobspec.TrainingParams` only (names by the one grammar, bounded numbers, no Redis
  URL or other secret): a bad job is refused here, before the lock or the queue is touched, and again
  by the worker before it runs.
* The job resumes from its own checkpoint (keyed by the job id) when RQ retries it after a crash,
  and releases the lock when it completes.

This module never imports torch or MLX at import time (the worker parent imports it; the work-horse
imports the backend after the fork).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis as redis_mod
from rq import Retry, get_current_job
from rq.job import Job, JobStatus

from common import held_keys, keys
from common.log import kv, redact_value
from trainer_svc.jobspec import TrainingParams, fetch, queue

log = logging.getLogger("trainer.jobs")
JOB_TIMEOUT_S = 2 * 3600
RETRY_INTERVALS = [10, 30, 60]
RESULT_TTL_S = 86_400
ACTIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


class AlreadyRunning(RuntimeError):
    """A training job for this policy is already queued or running."""

    def __init__(self, policy: str, job_id: str, status: str) -> None:
        super().__init__(f"training for policy {policy!r} is already {status} as job {job_id}; refusing a second one")
        self.job_id, self.status = job_id, status


def lock_ttl_s(job_timeout: int = JOB_TIMEOUT_S) -> int:
    return job_timeout * (len(RETRY_INTERVALS) + 1) + sum(RETRY_INTERVALS) + 600


def _holder_status(r: redis_mod.Redis, job_id: str) -> str | None:
    """Status of the lock holder if it is still active, else None (stale)."""
    try:
        st = fetch(r, job_id).get_status(refresh=True)
    except Exception:  # NoSuchJobError or a job hash without a status: stale
        return None
    return str(st.value if hasattr(st, "value") else st) if st in ACTIVE else None


def acquire_lock(r: redis_mod.Redis, policy: str, job_id: str, ttl_s: int) -> None:
    key = keys.training_lock_key(policy)
    for _ in range(10):
        if r.set(key, job_id, nx=True, ex=ttl_s):
            return
        with r.pipeline() as pipe:
            try:
                pipe.watch(key)
                holder = pipe.get(key)
                if holder is None:
                    continue
                hid = holder.decode() if isinstance(holder, bytes) else str(holder)
                status = _holder_status(r, hid)
                if status is not None:
                    raise AlreadyRunning(policy, hid, status)
                pipe.multi()
                pipe.set(key, job_id, ex=ttl_s)
                pipe.execute()
                kv(log, logging.INFO, "took over a stale training lock", policy=policy, stale_job=hid)
                return
            except redis_mod.WatchError:
                continue
    raise RuntimeError(f"could not acquire the training lock of {policy}")


def release_lock(r: redis_mod.Redis, policy: str, job_id: str) -> bool:
    """Delete the lock only if ``job_id`` holds it (compare-and-delete in Lua)."""
    return held_keys.release(r, keys.training_lock_key(policy), job_id)


def enqueue_training(
    r: redis_mod.Redis, params: dict[str, Any], job_timeout: int = JOB_TIMEOUT_S, retry: bool = True
) -> Job:
    """Enqueue one training job (``params``: :class:`TrainingParams` fields); raises ``InvalidJob`` (before
    anything is written) or AlreadyRunning."""
    spec = TrainingParams.parse(params)
    policy = spec.policy_name
    job_id = f"train-{policy}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**6:06d}"
    acquire_lock(r, policy, job_id, lock_ttl_s(job_timeout))
    try:
        return queue(r).enqueue(
            "trainer_svc.jobs.training_job",
            kwargs={"params": spec.to_job()},
            job_id=job_id,
            unique=True,
            job_timeout=job_timeout,
            result_ttl=RESULT_TTL_S,
            retry=Retry(max=3, interval=RETRY_INTERVALS) if retry else None,
            meta={"policy": policy, "progress": 0.0, "stage": "queued"},
            description=f"train {policy} ({spec.algo})",
        )
    except BaseException:
        release_lock(r, policy, job_id)
        raise


def training_job(params: dict[str, Any]) -> dict[str, Any]:
    """The RQ job: run the pipeline with progress in ``job.meta`` and a checkpoint keyed by the job id.
    The params are validated again here (the worker checked them before forking); the return value is
    plain JSON."""
    from trainer_svc.pipeline import run_training

    job = get_current_job()
    p = TrainingParams.parse(params).to_pipeline()
    conn = job.connection if job is not None else None
    last = [0.0]

    def progress(frac: float, info: dict[str, Any]) -> None:
        if job is None:
            return
        now = time.monotonic()
        if now - last[0] < 0.5 and frac < 1.0:
            return
        last[0] = now
        job.meta.update(
            progress=round(float(frac), 4),
            stage=info.get("stage", ""),
            last=redact_value({k: v for k, v in info.items() if isinstance(v, int | float | str)}),
        )
        job.save_meta()

    if job is not None:
        job.meta["attempt"] = int(job.meta.get("attempt", 0)) + 1
        job.save_meta()
    from trainer_svc.preflight import NotTrainable

    try:
        summary = run_training(p, progress, run_key=job.id if job is not None else None, redis=conn)
    except NotTrainable as e:  # the data cannot train this job: retrying would not help, say what to change
        summary = {"trained": False, "not_trainable": str(e), "policy": p.policy_name}
        if job is not None:
            job.meta.update(stage="not_trainable", not_trainable=str(e))
            job.save_meta()
    if conn is not None and job is not None:
        release_lock(conn, p.policy_name, job.id)
    # stored in Redis as the job's result: plain JSON, URL credentials (e.g. of the worker's own store) redacted
    return dict(redact_value(orjson.loads(orjson.dumps(summary, default=str, option=orjson.OPT_SERIALIZE_NUMPY))))
