"""What a training job may carry and how RQ stores it: JSON only, validated at enqueue and on the worker.

* :class:`JobSerializer` implements RQ's serializer interface (``dumps``/``loads``) with JSON (orjson; numpy
  scalars allowed on the way out). ``loads`` refuses anything that is not JSON and names a pickle when it
  sees one, so nothing stored in Redis (job data, meta, results) is ever unpickled. Every Queue, Job,
  Worker and registry of the training queue is built through :func:`queue`, :func:`fetch` or passes
  ``serializer=JobSerializer`` (RQ's default serializer is pickle: whoever can write to Redis could run code).
* :class:`TrainingParams` is the job's parameters (pydantic, unknown keys refused): market and policy names
  follow ``common.names``; numbers are finite and bounded; algorithm and backend are known ones;
  ``overrides`` only name ``TrainConfig`` fields with values of their type. It carries no secret: no Redis
  URL (the worker uses its own connection), and a store URL without credentials (the worker has its own).
* :func:`check_job` is what the worker verifies before it forks a work-horse: the function is
  :data:`JOB_FUNC`, no instance, no positional args, only ``params``, and the params are valid.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import redis as redis_mod
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job

from common import keys
from common.markets import joined_name, split_markets
from common.names import InvalidName, check_name

JOB_FUNC = "trainer_svc.jobs.training_job"
MAX_MS = 10**14  # epoch ms beyond year 5000: refused
# TrainConfig fields set from the job's own fields, never through overrides
_NOT_OVERRIDABLE = frozenset({"algo", "backend", "seed"})
# upper bounds of integer overrides (default 1,000,000); lower bound 0, or 1 where 0 makes no sense
_INT_MAX = {"epochs": 10_000, "ppo_iters": 10_000, "max_train_samples": 100_000_000, "minibatch": 1 << 22,
            "batch_size": 1 << 22, "horizon_s": 86_400, "val_max_states": 1_000_000_000,
            "eval_chunk_states": 1_000_000_000}  # fmt: skip
_INT_MIN1 = frozenset({"epochs", "batch_size", "minibatch", "horizon_s", "ppo_episodes", "eval_every", "ppo_epochs",
                       "val_max_states", "eval_chunk_states"})  # fmt: skip
_FLOAT_ABS_MAX = 1e6
_STR_CHOICES = {"ppo_init": ("awbc", "scratch")}


class InvalidJob(ValueError):
    """A job (its stored form or its parameters) that must not run; the message says why."""


class JobSerializer:
    """RQ serializer: JSON in, JSON out; a pickle (or anything else) is refused with a clear error."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    @staticmethod
    def loads(data: bytes) -> Any:
        raw = bytes(data)
        if raw[:1] == b"\x80":  # the PROTO opcode every pickle of protocol >= 2 starts with
            raise InvalidJob("stored job data is a pickle: refused (training jobs are JSON only; no pickle is loaded)")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidJob(f"stored job data is not JSON (a pickle or another format?): refused ({e})") from None


def queue(r: redis_mod.Redis) -> Queue:
    """The training queue, with the JSON serializer."""
    return Queue(keys.TRAINING_QUEUE, connection=r, serializer=JobSerializer)


def fetch(r: redis_mod.Redis, job_id: str) -> Job:
    """``Job.fetch`` with the JSON serializer (a job's meta and result are never unpickled)."""
    return Job.fetch(job_id, connection=r, serializer=JobSerializer)


def _check_store_url(v: str | None) -> str | None:
    if v is None:
        return None
    if len(v) > 1024 or any(ord(c) < 32 for c in v):
        raise ValueError("store_url: too long or has control characters")
    u = urlsplit(v)
    if u.scheme not in ("file", "s3"):
        raise ValueError(f"store_url: scheme must be file:// or s3://, not {u.scheme!r}")
    if "@" in u.netloc or "password" in u.query.lower() or "secret" in u.query.lower():
        raise ValueError("store_url: credentials do not belong in a job (the worker has its own)")
    return v


def _check_overrides(ov: dict[str, Any]) -> dict[str, Any]:
    from trainer_svc.algos import TrainConfig  # numpy only: no torch/MLX in the worker parent

    defaults = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for k, v in ov.items():
        if k not in defaults or k in _NOT_OVERRIDABLE:
            raise ValueError(f"overrides: unknown or fixed TrainConfig field {k!r}")
        d = defaults[k]
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
            ok = ok and (1 if k in _INT_MIN1 else 0) <= v <= _INT_MAX.get(k, 1_000_000)
        elif isinstance(d, float):
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and abs(v) <= _FLOAT_ABS_MAX
            v = float(v) if ok else v
        elif isinstance(d, str):
            ok = isinstance(v, str) and v in _STR_CHOICES.get(k, (d,))
        elif isinstance(d, tuple):
            ok = isinstance(v, list | tuple) and 0 < len(v) <= 64
            ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            ok = ok and all(abs(x) <= _FLOAT_ABS_MAX for x in v)
            v = tuple(float(x) for x in v) if ok else v
        else:
            ok = False
        if not ok:
            raise ValueError(f"overrides: bad value for {k!r}: {str(v)[:60]!r}")
        out[k] = v
    return out


class TrainingParams(BaseModel):
    """The parameters of one training job (``job_data.JobParams`` without anything secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    market: str = Field(max_length=4096)  # one market, or several comma-separated (pooled)
    algo: Literal["awbc", "supervised", "ppo"] = "awbc"
    backend: Literal["auto", "mlx", "torch"] = "auto"
    policy: str | None = None
    from_ms: int | None = Field(None, ge=0, le=MAX_MS)
    to_ms: int | None = Field(None, ge=0, le=MAX_MS)
    synthetic: int = Field(0, ge=0, le=50_000_000)
    synthetic_lag_s: float = Field(30.0, ge=0.0, le=3600.0)
    store_url: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    margin: float = Field(0.0, ge=-1e6, le=1e6)
    promote: bool = True
    overrides: dict[str, Any] = Field(default_factory=dict)
    origin: Literal["recorded", "imported", "both"] = "both"  # archived states: live, imported/backfilled, both
    exclude_flags: int = Field(0, ge=0, le=2**31 - 1)  # drop states with any of these flag bits (fidelity filter)

    @field_validator("market")
    @classmethod
    def _markets(cls, v: str) -> str:
        names = split_markets(v)
        if not names:
            raise ValueError("market: no market given")
        for m in names:
            check_name(m, "market")
        return ",".join(names)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "policy")

    @field_validator("store_url")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        return _check_store_url(v)

    @field_validator("overrides")
    @classmethod
    def _over(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(v)

    @model_validator(mode="after")
    def _derived(self) -> TrainingParams:
        check_name(self.policy_name, "policy")
        if self.from_ms is not None and self.to_ms is not None and self.from_ms > self.to_ms:
            raise ValueError("from_ms is after to_ms")
        return self

    @property
    def policy_name(self) -> str:
        """The registry name: ``policy``, else the market (several joined with ``_``)."""
        return self.policy or joined_name(self.market)

    @classmethod
    def parse(cls, d: Any) -> TrainingParams:
        """Validated parameters, or :class:`InvalidJob` naming every problem (names quoted safely)."""
        if not isinstance(d, dict):
            raise InvalidJob(f"job parameters must be a mapping, not {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except InvalidName as e:
            raise InvalidJob(str(e)) from None
        except ValidationError as e:
            why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'params'}: {err['msg']}" for err in e.errors())
            raise InvalidJob(f"invalid training job parameters: {why}") from None

    def to_job(self) -> dict[str, Any]:
        """The JSON-able dict stored as the job's ``params``."""
        return self.model_dump(mode="json")

    def to_pipeline(self) -> Any:
        """The pipeline's ``JobParams`` (imported here: the pipeline pulls in the trainer's modules)."""
        from trainer_svc.job_data import JobParams

        return JobParams(**self.model_dump())


def check_job(job: Job) -> TrainingParams:
    """The params of a stored job if it may run on a training worker; :class:`InvalidJob` otherwise."""
    try:
        func, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError as e:  # not JSON, or JSON that is not RQ's (func, instance, args, kwargs)
        cause = e.__cause__
        why = str(cause) if isinstance(cause, InvalidJob) else f"malformed job data: refused ({cause})"
        raise InvalidJob(why) from None
    if func != JOB_FUNC or instance is not None or args:
        raise InvalidJob(f"job calls {str(func)[:80]!r} with an instance or positional args: refused")
    if not isinstance(kwargs, dict) or set(kwargs) != {"params"}:
        raise InvalidJob("job keyword arguments must be exactly {'params': {...}}: refused")
    return TrainingParams.parse(kwargs["params"])
