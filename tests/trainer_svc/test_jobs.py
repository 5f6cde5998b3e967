"""RQ training jobs against a real redis-server and real worker processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from common import artefact as registry
from common import keys
from common.store import LocalStore
from trainer_svc.jobs import AlreadyRunning, enqueue_training
from trainer_svc.jobspec import fetch


def params(store_dir, n=36_000, **over):
    p = {
        "market": "SYN",
        "algo": "awbc",
        "backend": "torch",
        "synthetic": n,
        "store_url": f"file://{store_dir}",
        "overrides": {"epochs": 1},
    }
    p.update(over)
    return p


def start_worker(redis_url, store_dir, *extra):
    """A worker process logging to ``<store_dir>/worker-<n>.log`` (never an undrained pipe)."""
    env = {**os.environ, "FUSION_REDIS_URL": redis_url, "FUSION_STORE_URL": f"file://{store_dir}"}
    log = open(f"{store_dir}/worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 (the child owns it)
    p = subprocess.Popen(
        [sys.executable, "-m", "fusion.cli", "worker", "--redis-url", redis_url, *extra],
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    p.log_path = log.name
    return p


def children(pid):
    """Pids whose parent is ``pid`` (RQ's work-horse runs in its own session, not in the worker's group)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wait(pred, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def test_second_enqueue_refused_and_stale_lock_taken_over(r, tmp_path):
    job = enqueue_training(r, params(tmp_path))
    assert r.get(keys.training_lock_key("SYN")).decode() == job.id
    assert job.timeout == 7200 and job.retries_left == 3
    with pytest.raises(AlreadyRunning, match="already queued"):
        enqueue_training(r, params(tmp_path))
    job.cancel()
    job2 = enqueue_training(r, params(tmp_path))  # the lock named a cancelled job: stale
    assert r.get(keys.training_lock_key("SYN")).decode() == job2.id


def test_worker_runs_a_tiny_job(redis_url, tmp_path):
    r = redis.Redis.from_url(redis_url)
    job = enqueue_training(r, params(tmp_path))
    w = start_worker(redis_url, tmp_path, "--burst")
    try:
        assert w.wait(timeout=240) == 0, open(w.log_path).read()[-3000:]  # noqa: SIM115
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    job = fetch(r, job.id)
    assert job.is_finished, job.get_status()
    res = job.return_value()
    assert res["policy"] == "SYN" and res["version"] in registry.list_versions(LocalStore(tmp_path), "SYN")
    assert job.meta["progress"] == 1.0 and job.meta["attempt"] == 1
    assert r.get(keys.training_lock_key("SYN")) is None  # released on completion


@pytest.mark.slow
def test_sigkilled_worker_job_is_retried_and_completes(redis_url, tmp_path):
    r = redis.Redis.from_url(redis_url)
    fast = ["--monitor-interval", "1", "--heartbeat-grace", "2", "--maintenance-interval", "2"]
    job = enqueue_training(r, params(tmp_path, n=180_000, overrides={"epochs": 6}))
    victim = start_worker(redis_url, tmp_path, "--no-scheduler", *fast)
    ckpt = f"checkpoints/SYN/{job.id}/state.json"
    store = LocalStore(tmp_path)
    try:
        assert wait(lambda: store.exists(ckpt), 180), "no checkpoint written"
        horses = children(victim.pid)
        assert horses, "no work-horse found"
        for pid in [victim.pid, *horses]:  # the whole worker dies mid-training (as with a machine crash)
            os.kill(pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert fetch(r, job.id).get_status() == "started"
    rescuer = start_worker(redis_url, tmp_path, *fast)
    try:
        ok = wait(lambda: fetch(r, job.id).is_finished, 300, step=1)
        assert ok, fetch(r, job.id).get_status()
    finally:
        os.killpg(rescuer.pid, signal.SIGTERM)
        try:
            rescuer.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(rescuer.pid, signal.SIGKILL)
    job = fetch(r, job.id)
    assert job.meta["attempt"] == 2 and job.retries_left == 2  # retried once, after the abandoned execution
    assert job.return_value()["policy"] == "SYN"
    assert not store.exists(ckpt)  # cleared after completion


def test_follow_of_a_not_trainable_job_exits_2_with_the_reason(redis_url, tmp_path):
    """``fusion train --follow`` says what the worker said: a job whose data cannot train (here: an empty store)
    ends with exit 2 and the preflight's reason, as the inline path does, not exit 0 with a summary lacking a
    version."""
    env = {**os.environ, "FUSION_REDIS_URL": redis_url, "FUSION_STORE_URL": f"file://{tmp_path}"}
    w = start_worker(redis_url, tmp_path)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "fusion.cli", "train", "--market", "BTC-5M", "--backend", "torch", "--follow",
             "--redis-url", redis_url, "--store-url", f"file://{tmp_path}"],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        os.killpg(w.pid, signal.SIGKILL)
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert "not trainable" in out.stderr, out.stderr[-2000:]
