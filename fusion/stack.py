"""``fusion stack up | down | status``: the compose services as supervised local processes, no Docker.

``up`` writes ``DIR/stack.json`` (the processes) and starts a detached supervisor
(``python -m fusion.stack supervise --dir DIR``, own session) that starts every process, restarts
one that exits with exponential backoff (reset after it stayed up ``stable_s``), logs each to
``DIR/logs/NAME.log`` and writes ``DIR/status.json``; its pid is in ``DIR/supervisor.pid``.
``down`` SIGTERMs the supervisor, which SIGTERMs the apps, waits ``grace`` seconds, SIGKILLs what is
left (whole process groups), then stops the infrastructure (a private redis-server) the same way.
A private ``redis-server`` (AOF on, data in ``DIR/redis``) is part of the stack when
``FUSION_REDIS_URL`` does not answer.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from common.log import redact, redact_value
from common.markets import parse_market, spec_list_arg
from common.redisproc import free_port, port_or_free
from common.settings import Settings
from fusion.cli import COMMANDS

DEFAULT_DIR = "./fusion-data/stack"


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


def _write_json(path: Path, data: Any) -> None:
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
        _write_json(stack_dir / "status.json", {"supervisor": os.getpid(), "state": state, "started_at": started,
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


# ----------------------------------------------------------------------------- CLI
def _fusion(*args: str) -> list[str]:
    return [sys.executable, "-m", "fusion.cli", *args]


def _available(cmd: str) -> bool:
    return importlib.util.find_spec(COMMANDS[cmd][0].split(".")[0]) is not None and (
        importlib.util.find_spec(COMMANDS[cmd][0]) is not None
    )


def build_procs(a: argparse.Namespace, st: Settings, stack_dir: Path) -> tuple[list[ProcSpec], dict[str, str]]:
    """The compose services as local processes, and the environment they share."""
    procs: list[ProcSpec] = []
    markets = [m for spec in (a.markets or []) for m in spec.split(",") if m] or st.markets
    env = {"FUSION_MARKETS": ",".join(markets), "FUSION_FEED": a.feed, "FUSION_METRICS_PORT": "0"}
    try:
        redis.Redis.from_url(st.redis_url, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit(
                f"fusion stack: {redact(st.redis_url)} does not answer and redis-server is not installed"
            ) from None
        port = free_port()
        (stack_dir / "redis").mkdir(parents=True, exist_ok=True)
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str((stack_dir / "redis").resolve()),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]  # fmt: skip
        procs.append(ProcSpec("redis", argv, tier=0, wait_port=port))
        env["FUSION_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    if a.feed == "sim":
        port = free_port()
        sim = _fusion(
            "sim", "synthetic", "--port", str(port), "--speed", str(a.sim_speed), "--markets", ",".join(markets)
        )
        procs.append(ProcSpec("sim", sim, tier=0, wait_port=port))
        env["FUSION_SIM_URL"] = f"http://127.0.0.1:{port}"
    names = [parse_market(m).name for m in markets]  # specs (NAME=slug:..@SYM) -> the names keys are built from
    apps: list[tuple[str, list[str], dict[str, str]]] = [
        (
            f"observer-{i + 1}",
            ["observe", "--leases", "--replicas", str(a.replicas)],
            {"FUSION_OBSERVER_ID": f"stack-obs-{i + 1}"},
        )
        for i in range(a.observers)
    ]
    apps += [
        ("archiver", ["archive"], {"FUSION_ARCHIVER_ID": "stack-archiver"}),
        ("labeler", ["label", "--consumer", "stack-labeler"], {}),
        ("worker", ["worker"], {}),
        ("scheduler", ["schedule", *[x for m in names for x in ("--market", m)]], {}),
        ("trader", ["trade", "--market", names[0], "--policy", names[0]], {}),
        ("monitor", ["monitor", "--policy", names[0]], {}),  # alerts; rolls back with FUSION_MONITOR_ROLLBACK
        ("ui", ["ui"], {"FUSION_UI_PORT": str(port_or_free(st.ui_port, st.ui_host))}),  # 8050 unless taken
    ]
    port = a.metrics_base
    for name, args, extra in apps:
        if not _available(args[0]):
            print(f"fusion stack: skipping {name}: `fusion {args[0]}` is not available", file=sys.stderr)
            continue
        if a.metrics_base:
            extra = extra | {"FUSION_METRICS_PORT": str(port)}
            port += 1
        procs.append(ProcSpec(name, _fusion(*args), extra))
    return procs, env


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own exited child (e.g. `up` and `down` in one process)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _supervisor_pid(stack_dir: Path) -> int | None:
    try:
        pid = int((stack_dir / "supervisor.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def start_detached(stack_dir: Path, wait_s: float = 15.0) -> int:
    """Start the supervisor of ``stack_dir/stack.json`` in its own session; returns its pid once it runs."""
    log = open(stack_dir / "supervisor.log", "ab")  # noqa: SIM115 (handed to the child)
    argv = [sys.executable, "-m", "fusion.stack", "supervise", "--dir", str(stack_dir)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fusion stack: supervisor exited with {proc.returncode}; see {stack_dir}/supervisor.log")
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads((stack_dir / "status.json").read_text()).get("supervisor") == proc.pid:
                return proc.pid
        time.sleep(0.05)
    return proc.pid


def up(a: argparse.Namespace) -> int:
    stack_dir = Path(a.dir)
    stack_dir.mkdir(parents=True, exist_ok=True)
    if (pid := _supervisor_pid(stack_dir)) is not None:
        print(f"fusion stack: already running (supervisor {pid}); `fusion stack down --dir {stack_dir}` first")
        return 1
    st = Settings()
    procs, env = build_procs(a, st, stack_dir)
    for p in procs:
        if p.tier:
            p.env = env | p.env
    cfg = {"procs": [asdict(p) for p in procs], "grace_s": a.grace, "env": env,
           "supervisor": {"backoff_s": 0.5, "backoff_max_s": 60.0, "stable_s": 30.0}}  # fmt: skip
    with contextlib.suppress(FileNotFoundError):
        (stack_dir / "status.json").unlink()
    _write_json(stack_dir / "stack.json", cfg)
    pid = start_detached(stack_dir)
    print(f"fusion stack: supervisor {pid} runs {', '.join(p.name for p in procs)}; logs in {stack_dir / 'logs'}")
    print(redact(f"  redis: {env.get('FUSION_REDIS_URL', st.redis_url)}   store: {st.store_url}   feed: {a.feed}"))
    if ui := next((p for p in procs if p.name == "ui"), None):
        print(f"  dashboard: http://{st.ui_host}:{ui.env['FUSION_UI_PORT']}")
    return 0


def down(a: argparse.Namespace) -> int:
    stack_dir = Path(a.dir)
    pid = _supervisor_pid(stack_dir)
    if pid is None:
        print("fusion stack: not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    cfg = json.loads((stack_dir / "stack.json").read_text())
    deadline = time.monotonic() + (a.timeout or 2 * float(cfg.get("grace_s", 30.0)) + 15)
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):  # the supervisor hung: kill it and every process group it started
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError, ValueError):
            for p in json.loads((stack_dir / "status.json").read_text())["procs"]:
                if p["pid"]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(p["pid"], signal.SIGKILL)
        print(f"fusion stack: supervisor {pid} did not stop in time; killed")
        return 1
    print(f"fusion stack: stopped (supervisor {pid})")
    return 0


def _last_line(path: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return redact(lines[-1])[:120] if lines else ""
    return ""


def status(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    stack_dir = Path(a.dir)
    pid = _supervisor_pid(stack_dir)
    try:
        snap = json.loads((stack_dir / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        print(f"fusion stack: no stack in {stack_dir}")
        return 1
    if a.json:
        print(json.dumps(snap | {"alive": pid is not None}, indent=1))
        return 0 if pid else 3
    age = time.time() - float(snap.get("updated", 0))
    title = f"fusion stack ({stack_dir}): supervisor {pid or snap.get('supervisor')} " + (
        f"running, updated {age:.0f} s ago" if pid else "not running")  # fmt: skip
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(title, soft_wrap=True, markup=False)  # one line, never wrapped into the table's width
    t = Table()
    for col in ("process", "pid", "state", "restarts", "uptime", "last exit", "last log line"):
        t.add_column(col, overflow="fold")
    for p in snap["procs"]:
        up_ = bool(pid and p["up"])
        t.add_row(p["name"], str(p["pid"] or "-"), "[green]up[/]" if up_ else "[red]down[/]", str(p["restarts"]),
                  f"{p['uptime_s'] + age:.0f} s" if up_ and p["uptime_s"] is not None else "-",
                  "-" if p["last_exit"] is None else str(p["last_exit"]), _last_line(p["log"]))  # fmt: skip
    console.print(t)
    return 0 if pid else 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fusion stack", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the stack in the background")
    p_up.add_argument("--feed", choices=("live", "sim"), default="live")
    p_up.add_argument(
        "--markets",
        action="append",
        type=spec_list_arg,
        help="market specs, comma-separated or repeated (default: settings)",
    )
    p_up.add_argument("--observers", type=int, default=2, help="observer processes (leases)")
    p_up.add_argument("--replicas", type=int, default=2, help="observers per market")
    p_up.add_argument("--sim-speed", type=float, default=1.0, help="--feed sim: sim seconds per wall second")
    p_up.add_argument("--metrics-base", type=int, default=0, help="give process i metrics port BASE+i (0: off)")
    p_up.add_argument("--grace", type=float, default=60.0, help="seconds between SIGTERM and SIGKILL on down")
    p_down = sub.add_parser("down", help="stop the stack gracefully")
    p_down.add_argument("--timeout", type=float, help="give up waiting after this long (default 2 x grace + 15 s)")
    p_st = sub.add_parser("status", help="each process: pid, up/down, restarts, uptime, last log line")
    p_st.add_argument("--json", action="store_true")
    p_sup = sub.add_parser("supervise", help=argparse.SUPPRESS)
    for p in (p_up, p_down, p_st, p_sup):
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"stack directory (default {DEFAULT_DIR})")
    a = ap.parse_args(argv)
    if a.cmd == "supervise":
        return supervise(Path(a.dir))
    return {"up": up, "down": down, "status": status}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
