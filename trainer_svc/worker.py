"""The training worker: RQ's forking ``Worker`` on the ``training`` queue, with the scheduler (for
retry intervals).

Why the forking worker: the parent keeps heart-beating every ``monitor_interval`` seconds while the
work-horse trains, so a long job is never marked abandoned while it runs (the ``SimpleWorker``
sends no heartbeats during a job); torch and MLX are imported only in the horse, after the fork, so
no thread pool is forked (RQ #1609/#1991). If the whole worker dies (kill -9), its job's execution
expires ``monitor_interval + heartbeat_grace`` seconds later and the next registry cleanup (every
``maintenance_interval`` seconds, by any training worker) retries it; the retry resumes from the
job's last epoch checkpoint.

Retry intervals are run by a worker's scheduler; a killed worker's scheduler lock expires after 61 s
and is re-taken by another worker within RQ's 120 s fallback period, so a retry after a kill -9 can
wait up to ~3 minutes in the worst case (workers started with ``--no-scheduler`` never hold it).

Only JSON jobs run (``trainer_svc.jobspec``): the worker, its queue, its registries and its scheduler
use :class:`~trainer_svc.jobspec.JobSerializer`, so nothing in Redis is unpickled, and before forking a
work-horse the worker checks the job (:func:`~trainer_svc.jobspec.check_job`: the training function,
valid parameters). A refused job (a pickle, unknown function, bad parameters) is failed at once, without
retries, with the reason in its result and the failed registry; it is counted
(``fusion_trainer_jobs_refused_total``) and logged, and the worker takes the next job.

Shutdown: the first SIGTERM/SIGINT is RQ's warm shutdown (the current job finishes; its checkpoints
are written every epoch anyway); a second one kills the horse (the job is then retried).
"""

from __future__ import annotations

import logging
from typing import Any

import redis as redis_mod
from rq import Queue, Worker
from rq.job import Job

from common import alerts, keys
from common.log import kv
from common.metrics import counter
from trainer_svc.jobspec import InvalidJob, JobSerializer, check_job, queue

log = logging.getLogger("trainer.worker")
REFUSED = counter("fusion_trainer_jobs_refused_total", "training jobs refused before running (pickle, bad params)")


class TrainingWorker(Worker):
    """``Worker`` whose execution heartbeat TTL is ``job_monitoring_interval + heartbeat_grace``
    (RQ hard-codes +60 s), so a dead worker's job is detected as abandoned sooner when configured."""

    heartbeat_grace: int = 60

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        ttl = int(super().get_heartbeat_ttl(job, working_time))
        return max(1, ttl - 60 + int(self.heartbeat_grace))

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` only if :func:`check_job` accepts it; otherwise fail it here, in the parent, before
        any of its data reaches a work-horse (and without retries: a refused job is refused again)."""
        try:
            check_job(job)
        except InvalidJob as e:
            self.refuse(job, queue, str(e))
            return
        super().execute_job(job, queue)

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        """In the work-horse: run the job, then give its alerts (promotion, rejection) the time to be POSTed,
        since the horse ends with ``os._exit`` (no atexit)."""
        try:
            return bool(super().perform_job(job, queue, *args, **kwargs))
        finally:
            alerts.flush()

    def refuse(self, job: Job, queue: Queue, reason: str) -> None:
        REFUSED.inc()
        kv(log, logging.ERROR, "training job refused", job=job.id, reason=reason)
        job.retries_left = 0
        job.ended_at = None
        self.handle_job_failure(job, queue, exc_string=f"InvalidJob: training job refused: {reason}")
        self.connection.hset(job.key, "retries_left", 0)
        queue.intermediate_queue.remove(job.id)  # as the horse does for a job it runs: no later "stuck" cleanup


def run_worker(
    redis_url: str,
    burst: bool = False,
    monitor_interval: int = 10,
    maintenance_interval: int = 60,
    heartbeat_grace: int = 60,
    name: str | None = None,
    with_scheduler: bool = True,
    **kwargs: Any,
) -> bool:
    r = redis_mod.Redis.from_url(redis_url)
    w = TrainingWorker(
        [queue(r)],
        connection=r,
        serializer=JobSerializer,
        name=name,
        job_monitoring_interval=monitor_interval,
        maintenance_interval=maintenance_interval,
        # an idle worker blocks worker_ttl - 15 s in dequeue before it can clean registries (RQ's default
        # 420 s would leave a dead worker's job unnoticed for ~7 minutes)
        worker_ttl=max(16, maintenance_interval + 15),
    )
    w.heartbeat_grace = heartbeat_grace
    kv(
        log,
        logging.INFO,
        "training worker starting",
        queue=keys.TRAINING_QUEUE,
        burst=burst,
        monitor_s=monitor_interval,
        maintenance_s=maintenance_interval,
    )
    return bool(w.work(burst=burst, with_scheduler=with_scheduler, **kwargs))
