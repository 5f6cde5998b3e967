"""Training jobs carry no pickle and no secret, and the worker refuses anything else (issue 10, defects 1, 4, 8).

Real redis-server (one with ``--requirepass`` where credentials matter) and real ``fusion worker`` processes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import uuid
import zlib
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from common import keys
from common.redisproc import RedisServer
from tests.trainer_svc.test_jobs import params, start_worker
from trainer_svc import cli
from trainer_svc.jobs import enqueue_training

BAD_POLICIES = ["../x", "a/b", "evil\nINFO forged=1", ".", ""]
GRAMMAR = "use 1-128 characters from A-Z a-z 0-9 _ -"


def _serializer():
    from trainer_svc.jobspec import JobSerializer

    return JobSerializer


def _job_bytes(r: redis.Redis, job_id: str) -> bytes:
    """Everything RQ stored for a job (its hash, with ``data`` decompressed), as one byte string."""
    h = r.hgetall(f"rq:job:{job_id}")
    out = []
    for k, v in h.items():
        if k == b"data":
            with contextlib.suppress(zlib.error):
                v = zlib.decompress(v)
        out += [k, v]
    return b"\n".join(out)


class _Touch:
    """A pickle that runs a shell command when loaded (the attack of defect 1)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.path}",))


def test_enqueued_job_is_json_with_no_secret(tmp_path: Path) -> None:
    """``fusion train`` against a password-protected Redis: the job hash holds JSON, no pickle, no password."""
    pw = f"s3cret-{uuid.uuid4().hex[:8]}"
    with RedisServer(password=pw) as srv:
        rc = cli.train_main(["--market", "SYN", "--synthetic", "1000", "--backend", "torch",
                             "--redis-url", srv.url, "--store-url", f"file://{tmp_path}"])  # fmt: skip
        assert rc == 0
        r = redis.Redis.from_url(srv.url)
        (job_key,) = r.keys("rq:job:*")
        job_id = job_key.decode().split(":", 2)[2]
        stored = _job_bytes(r, job_id)
        assert pw.encode() not in stored
        assert b"redis_url" not in stored
        data = zlib.decompress(r.hget(job_key, "data"))
        assert not data.startswith(b"\x80")  # not a pickle
        import json

        func, instance, args, kwargs = json.loads(data)
        assert func == "trainer_svc.jobs.training_job" and instance is None and args == []
        assert kwargs["params"]["policy"] is None and "redis_url" not in kwargs["params"]
        job = Job.fetch(job_id, connection=r, serializer=_serializer())
        assert job.kwargs["params"]["market"] == "SYN"


@pytest.mark.parametrize("bad", BAD_POLICIES)
def test_train_refuses_a_bad_policy_before_anything(bad: str, r: redis.Redis, redis_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Enqueue path and inline path: refused with the grammar, nothing enqueued, nothing trained or stored."""
    store = tmp_path / "store"
    for extra in ([], ["--inline"]):
        with pytest.raises(SystemExit) as ex:
            cli.train_main(["--market", "SYN", "--policy", bad, "--synthetic", "3000", "--backend", "torch",
                            "--redis-url", redis_url, "--store-url", f"file://{store}", *extra])  # fmt: skip
        assert ex.value.code == 2
        err = capsys.readouterr().err
        assert GRAMMAR in err and "invalid policy name" in err
        assert "\nINFO forged" not in err  # the name is quoted, never a line of its own
    assert r.keys("*") == []  # no job, no lock
    assert not store.exists()  # no data loaded, no checkpoint, no model


@pytest.mark.parametrize(
    "change, why",
    [
        ({"policy": "../x"}, "policy"),
        ({"market": "BTC-15M,../ETH"}, "market"),
        ({"market": ""}, "market"),
        ({"algo": "os.system"}, "algo"),
        ({"backend": "cuda"}, "backend"),
        ({"synthetic": -1}, "synthetic"),
        ({"synthetic": 10**12}, "synthetic"),
        ({"seed": 2**70}, "seed"),
        ({"margin": float("nan")}, "margin"),
        ({"redis_url": "redis://:pw@host:6379/0"}, "redis_url"),
        ({"__reduce__": 1}, "__reduce__"),
        ({"overrides": {"epochs": 10**9}}, "epochs"),
        ({"overrides": {"no_such_field": 1}}, "no_such_field"),
        ({"overrides": {"lr": "1e-3; rm -rf /"}}, "lr"),
        ({"store_url": "s3://AKIA:secret@bucket/x"}, "store_url"),
        ({"store_url": "http://evil/"}, "store_url"),
    ],
)
def test_job_parameters_are_validated(change: dict, why: str, r: redis.Redis, tmp_path: Path) -> None:
    from trainer_svc.jobspec import InvalidJob, TrainingParams

    p = params(tmp_path) | change
    with pytest.raises(InvalidJob, match=why):
        TrainingParams.parse(p)
    with pytest.raises(InvalidJob):
        enqueue_training(r, p)
    assert r.keys("*") == []  # refused before the lock or the queue is touched


def test_serializer_refuses_a_pickle_with_a_clear_error() -> None:
    from trainer_svc.jobspec import JobSerializer

    blob = pickle.dumps(("trainer_svc.jobs.training_job", None, (), {}))
    with pytest.raises(ValueError, match="pickle"):
        JobSerializer.loads(blob)
    assert JobSerializer.loads(JobSerializer.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}


@pytest.mark.slow
def test_worker_refuses_a_pickled_job_and_runs_the_next(redis_url: str, tmp_path: Path) -> None:
    """A job whose ``data`` was overwritten with a code-running pickle: not run, moved to the failed registry
    with the reason; the same worker process then runs a good job."""
    r = redis.Redis.from_url(redis_url)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:6]}"
    bad = enqueue_training(r, params(tmp_path, policy="BAD"))
    payload = pickle.dumps(("trainer_svc.jobs.training_job", _Touch(marker), (), {}))
    r.hset(f"rq:job:{bad.id}", "data", zlib.compress(payload))
    meta_bomb = tmp_path / f"pwned-meta-{uuid.uuid4().hex[:6]}"
    r.hset(f"rq:job:{bad.id}", "meta", pickle.dumps(_Touch(meta_bomb)))
    good = enqueue_training(r, params(tmp_path, n=20_000))
    w = start_worker(redis_url, tmp_path, "--burst")
    try:
        assert w.wait(timeout=240) == 0, Path(w.log_path).read_text()[-3000:]
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    log = Path(w.log_path).read_text()
    assert not marker.exists() and not meta_bomb.exists(), "the pickle ran on the worker"
    ser = _serializer()
    failed = FailedJobRegistry(keys.TRAINING_QUEUE, connection=r, serializer=ser)
    assert bad.id in failed.get_job_ids()
    bjob = Job.fetch(bad.id, connection=r, serializer=ser)
    assert bjob.get_status() == "failed" and bjob.retries_left in (0, None)
    reason = bjob.latest_result().exc_string
    assert "refused" in reason and "pickle" in reason, reason
    assert "refused" in log and bad.id in log
    gjob = Job.fetch(good.id, connection=r, serializer=ser)
    assert gjob.is_finished, (gjob.get_status(), log[-3000:])
    assert gjob.return_value()["policy"] == "SYN"


def test_worker_refuses_pickled_and_forged_jobs_and_keeps_going(redis_url: str, tmp_path: Path) -> None:
    """Quick variant: a pickled job, a JSON job calling another function and a JSON job with a forged policy
    name are all refused (no retry) by one worker process, which then exits normally at the end of its burst."""
    r = redis.Redis.from_url(redis_url)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:6]}"
    ids = [enqueue_training(r, params(tmp_path, policy=f"P{i}")).id for i in range(3)]
    r.hset(f"rq:job:{ids[0]}", "data", zlib.compress(pickle.dumps(("x", _Touch(marker), (), {}))))
    ser = _serializer()
    forged = [
        ("os.system", None, [f"touch {marker}"], {}),
        ("trainer_svc.jobs.training_job", None, [], {"params": params(tmp_path, policy="../../etc")}),
    ]
    for job_id, data in zip(ids[1:], forged, strict=True):
        r.hset(f"rq:job:{job_id}", "data", zlib.compress(ser.dumps(data)))
    w = start_worker(redis_url, tmp_path, "--burst")
    try:
        assert w.wait(timeout=60) == 0, Path(w.log_path).read_text()[-3000:]
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    assert not marker.exists()
    failed = FailedJobRegistry(keys.TRAINING_QUEUE, connection=r, serializer=ser)
    assert sorted(failed.get_job_ids()) == sorted(ids)
    reasons = [Job.fetch(i, connection=r, serializer=ser).latest_result().exc_string for i in ids]
    assert "pickle" in reasons[0] and "'os.system'" in reasons[1] and "invalid policy name '../../etc'" in reasons[2]
    assert all("refused" in x for x in reasons)
    assert all(int(r.hget(f"rq:job:{i}", "retries_left")) == 0 for i in ids)
    assert r.lrange(f"rq:queue:{keys.TRAINING_QUEUE}:intermediate", 0, -1) == []  # nothing left "stuck"
    assert all(len(Job.fetch(i, connection=r, serializer=ser).results()) == 1 for i in ids)  # failed once
    assert Path(w.log_path).read_text().count("training job refused") == 3


def test_schedule_refuses_bad_market_names(r: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer_svc.schedule import tick

    with pytest.raises(SystemExit) as ex:
        cli.schedule_main(["--market", "../x", "--once", "--redis-url", redis_url])
    assert ex.value.code == 2 and GRAMMAR in capsys.readouterr().err
    # a bad name reaching a pass of the schedule is skipped (logged once), the good one is enqueued
    assert len(tick(r, ["../x", "SYN"], "awbc", every_h=0, after_states=0)) == 0  # first sight: clocks start
    r.hset(keys.SCHEDULE_KEY, mapping={"../x:ts": 0, "SYN:ts": 0})
    ids = tick(r, ["../x", "SYN"], "awbc", every_h=1, after_states=0)
    assert len(ids) == 1 and ids[0].startswith("train-SYN-")
