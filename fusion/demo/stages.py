"""The demo's stages: each a real process (:class:`Proc`) started and watched by :class:`Demo`, which also
owns the demo's Redis and store (see :mod:`fusion.demo.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from common import keys
from common.log import redact
from common.redisproc import RedisServer
from common.store import ObjectStore
from fusion.demo.quality import WARN_FRACTION, Quality, StreamQuality, discovery_errors

console = Console(stderr=True)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # this process's own settings (e.g. its metrics port)

    def start(self, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fusion.cli", *self.argv], env={**env, **self.env}, stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM: each service finishes its batch and exits)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        p = self.popen
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(10)

    def stop_after(self, timeout: float) -> int | None:
        """Let the process finish on its own for ``timeout`` s, then stop it."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.stop(10)

    def kill(self) -> None:
        """SIGKILL the process (and its group) if it is still running."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Demo:
    args: argparse.Namespace
    workdir: Path
    markets: list[str]
    procs: dict[str, Proc] = field(default_factory=dict)
    redis_server: RedisServer | None = None
    redis_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None
    job_info: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    quality: StreamQuality | None = None
    metrics_urls: list[str] = field(default_factory=list)  # the observers' /metrics
    _dq_at: float = 0.0

    # ----------------------------------------------------------------- setup
    def start_redis(self) -> redis.Redis:
        url = os.environ.get("FUSION_REDIS_URL")
        if url:
            with contextlib.suppress(redis.RedisError):
                r = redis.Redis.from_url(url)
                r.ping()
                self.redis_url = url
                return r
            console.print(f"[yellow]FUSION_REDIS_URL={redact(url)} unreachable: starting a private redis-server[/]")
        # its own session: a Ctrl-C in the terminal must not stop Redis before the stages have stopped
        self.redis_server = RedisServer(appendonly=True, workdir=str(self.workdir / "redis"), detach=True).start()
        self.redis_url = self.redis_server.url
        return redis.Redis.from_url(self.redis_url)

    def proc(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, list(argv), self.workdir / "logs" / f"{name}.log", env=env or {})
        p.start(self.env)
        self.procs[name] = p
        return p

    # ----------------------------------------------------------------- view
    def update_quality(self, r: Any, every_s: float = 2.0) -> None:
        """Count the new states' flags and gaps, and the observers' discovery failures (every ``every_s``)."""
        if self.quality is None or time.monotonic() - self._dq_at < every_s:
            return
        self._dq_at = time.monotonic()
        with contextlib.suppress(redis.RedisError):
            self.quality.update(r)
        errors = discovery_errors(self.metrics_urls)
        if errors is not None:
            self.quality.set_discovery_errors(errors)

    def table(self, r: Any, store: ObjectStore) -> Table:
        self.update_quality(r)
        t = Table(title=f"fusion demo — {self.phase} — {time.monotonic() - self.t0:5.0f} s", expand=False)
        for col in ("market", "states", "labels", "archived objs", "archiver lag", "labeler lag", "no market",
                    "stale PM", "missing ticks", "disc. failures"):  # fmt: skip
            t.add_column(col, justify="right")
        objs: dict[str, int] = {}
        for info in store.list("market-data/"):
            m = info.key.split("/")[1]
            objs[m] = objs.get(m, 0) + 1
        warnings: list[str] = []
        for m in self.markets:
            st, lb = keys.states_stream(m), keys.labels_stream(m)
            lags = {}
            with contextlib.suppress(redis.ResponseError):
                for g in r.xinfo_groups(st):
                    lags[g["name"].decode()] = g.get("lag")
            q = self.quality.q[m] if self.quality else Quality()
            warnings += q.warnings(m)
            t.add_row(m, f"{_xlen(r, st):,}", f"{_xlen(r, lb):,}", str(objs.get(m, 0)),
                      str(lags.get(keys.ARCHIVER_GROUP, "-")), str(lags.get(keys.LABELER_GROUP, "-")),
                      _flagged(q.fraction("no_market")), _flagged(q.fraction("stale_poly")), f"{q.gaps:,}",
                      str(q.discovery_errors))  # fmt: skip
        trader = _trader_status(r, self.env.get("FUSION_TRADER_ID", "demo-trader"))
        job = self.job_info
        extra = [
            "processes: " + " ".join(f"{n}:{'up' if p.alive else 'down'}" for n, p in self.procs.items()),
            f"training: {job.get('status', '-')} {job.get('stage', '')} {float(job.get('progress', 0)) * 100:.0f}%",
            f"trader: model={trader.get('model') or 'none (holds)'} ticks={trader.get('ticks', '-')} "
            f"equity=${(trader.get('pnl') or {}).get('equity_usd', 0):.2f} swaps={trader.get('swaps', '-')}",
            *(f"[yellow]warning: {w}[/]" for w in warnings),
        ]
        t.caption = "\n".join(extra)
        return t

    def status_line(self, r: Any) -> str:
        """One line for logs / non-terminal output."""
        self.update_quality(r)
        parts = [f"[{time.monotonic() - self.t0:5.0f}s] {self.phase}:"]
        for m in self.markets:
            q = self.quality.q[m] if self.quality else Quality()
            parts.append(f"{m} states={_xlen(r, keys.states_stream(m))} labels={_xlen(r, keys.labels_stream(m))} "
                         f"no_market={q.fraction('no_market'):.1%} missing_ticks={q.gaps}")  # fmt: skip
        job = self.job_info
        if job:
            parts.append(f"training={job.get('status', '-')}/{job.get('stage', '')}")
        return " ".join(parts)

    def poll_job(self, r: Any) -> None:
        if not self.job_id:
            return
        from trainer_svc.jobspec import fetch  # JSON jobs: never unpickled

        with contextlib.suppress(Exception):
            job = fetch(r, self.job_id)
            st = job.get_status()
            self.job_info = {"status": getattr(st, "value", str(st)), **(job.meta or {})}
            if job.is_finished:
                self.job_info["result"] = job.return_value()
            elif job.is_failed:
                res = job.latest_result()
                self.job_info["error"] = res.exc_string[-2000:] if res and res.exc_string else "failed"


def _flagged(frac: float) -> str:
    s = f"{frac:.1%}" if frac else "0"
    return f"[yellow]{s}[/]" if frac > WARN_FRACTION else s


def _xlen(r: Any, key: str) -> int:
    try:
        return int(r.xlen(key))
    except redis.RedisError:
        return 0


def _trader_status(r: Any, trader: str) -> dict[str, Any]:
    import json

    raw = r.get(keys.trader_status_key(trader))
    if not raw:
        return {}
    with contextlib.suppress(Exception):
        return dict(json.loads(raw))
    return {}


__all__ = ["Demo", "Proc", "console"]
