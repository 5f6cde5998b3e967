"""The stack's process supervisor: starts processes by tier, restarts one that exits with exponential backoff,
stops them by tier (SIGTERM, then SIGKILL of the whole process group), and, as ``fusion stack``'s detached
supervisor (:func:`supervise`), writes ``DIR/status.json`` until SIGTERM/SIGINT. :mod:`fusion.stack` decides
which processes run and starts/stops this supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.log import redact_value


@dataclass
class ProcSpec:
    """One supervised process: tier 0 (infrastructure) starts first and stops last."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    tier: int = 1
    wait_port: int | None = None  # after starting, wait until 127.0.0.1:PORT accepts connections


@dataclass
class _Proc:
    spec: ProcSpec
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    restarts: int = 0
    started_at: float = 0.0  # wall clock
    started_mono: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    last_exit: int | None = None


class Supervisor:
    """Starts, watches and restarts processes; :meth:`poll` does one round and never blocks long.

    Guarantees: a process that exits is restarted after ``backoff_s * 2**k`` seconds (capped at
    ``backoff_max_s``; ``k`` resets once it ran ``stable_s``); :meth:`stop` leaves no process running.
    """

    def __init__(self, specs: list[ProcSpec], log_dir: Path, backoff_s: float = 0.5, backoff_max_s: float = 60.0,
                 stable_s: float = 30.0, base_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.procs = [_Proc(s) for s in specs]
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.backoff_s, self.backoff_max_s, self.stable_s = backoff_s, backoff_max_s, stable_s
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stopping = False

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _start(self, p: _Proc) -> None:
        with open(self.log_path(p.spec.name), "ab") as log:
            log.write(
                f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start #{p.starts + 1}: {' '.join(p.spec.argv)}\n".encode()
            )
            log.flush()
            p.popen = subprocess.Popen(p.spec.argv, env=self.base_env | p.spec.env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        p.starts += 1
        p.started_at, p.started_mono = time.time(), time.monotonic()
        if p.spec.wait_port:
            _wait_port(p.spec.wait_port, 10.0, p.popen)

    def start(self) -> None:
        for p in sorted(self.procs, key=lambda q: q.spec.tier):
            self._start(p)

    def poll(self) -> bool:
        """Reap exited processes and (re)start due ones; True if anything changed."""
        changed, now = False, time.monotonic()
        for p in self.procs:
            if p.popen is not None:
                rc = p.popen.poll()
                if rc is None:
                    if now - p.started_mono >= self.stable_s:
                        p.backoff = 0.0
                    continue
                p.last_exit, p.popen, changed = rc, None, True
                ran = now - p.started_mono
                p.backoff = (
                    self.backoff_s if ran >= self.stable_s or not p.backoff else min(p.backoff * 2, self.backoff_max_s)
                )
                p.next_start = now + p.backoff
                with open(self.log_path(p.spec.name), "ab") as log:
                    log.write(f"=== exited with {rc} after {ran:.1f} s; restart in {p.backoff:.2f} s\n".encode())
            if p.popen is None and not self.stopping and now >= p.next_start:
                p.restarts += 1
                self._start(p)
                changed = True
        return changed

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM by tier (apps first), wait up to ``grace_s`` each, then SIGKILL the process groups."""
        self.stopping = True
        for tier in sorted({p.spec.tier for p in self.procs}, reverse=True):
            group = [p for p in self.procs if p.spec.tier == tier and p.popen is not None]
            for p in group:
                _signal(p, signal.SIGTERM, group_too=False)
            deadline = time.monotonic() + grace_s
            for p in group:
                assert p.popen is not None
                try:
                    p.last_exit = p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal(p, signal.SIGKILL, group_too=True)
                    p.last_exit = p.popen.wait(timeout=10)
                _signal(p, signal.SIGKILL, group_too=True)  # leftovers of the group (e.g. an RQ horse)
                p.popen = None

    def status(self) -> list[dict[str, Any]]:
        now = time.time()
        return [{
            "name": p.spec.name, "pid": p.popen.pid if p.popen else None, "up": p.popen is not None,
            "restarts": p.restarts, "uptime_s": round(now - p.started_at, 1) if p.popen else None,
            "last_exit": p.last_exit, "log": str(self.log_path(p.spec.name)), "argv": p.spec.argv,
        } for p in self.procs]  # fmt: skip


def _signal(p: _Proc, sig: int, group_too: bool) -> None:
    if p.popen is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group_too:
            os.killpg(p.popen.pid, sig)  # start_new_session: pgid == pid
        else:
            p.popen.send_signal(sig)


def _wait_port(port: int, timeout: float, popen: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and popen.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write. ``stack.json`` holds no credential (the processes inherit ``FUSION_REDIS_URL``
    and the store's keys from the environment of ``up``); ``status.json`` is redacted all the same."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data if path.name == "stack.json" else redact_value(data), indent=1))
    os.replace(tmp, path)


def supervise(stack_dir: Path, poll_s: float = 0.2) -> int:
    """The supervisor process: run the stack in ``stack_dir/stack.json`` until SIGTERM/SIGINT."""
    cfg = json.loads((stack_dir / "stack.json").read_text())
    sup = Supervisor([ProcSpec(**s) for s in cfg["procs"]], stack_dir / "logs", **cfg.get("supervisor", {}))
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    (stack_dir / "supervisor.pid").write_text(str(os.getpid()))
    started = time.time()

    def report(state: str) -> None:
        write_json(stack_dir / "status.json", {"supervisor": os.getpid(), "state": state, "started_at": started,
                                                "updated": time.time(), "procs": sup.status()})  # fmt: skip

    try:
        sup.start()
        last = 0.0
        while not stop:
            if sup.poll() or time.monotonic() - last > 1.0:
                report("running")
                last = time.monotonic()
            time.sleep(poll_s)
        report("stopping")
        sup.stop(float(cfg.get("grace_s", 30.0)))
    finally:
        report("stopped")
        with contextlib.suppress(FileNotFoundError):
            (stack_dir / "supervisor.pid").unlink()
    return 0
