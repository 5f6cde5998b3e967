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
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import redis

from common.log import redact
from common.markets import parse_market, spec_list_arg
from common.redisproc import free_port, port_or_free
from common.settings import Settings
from fusion.cli import COMMANDS
from fusion.supervisor import ProcSpec, Supervisor, supervise, write_json

DEFAULT_DIR = "./fusion-data/stack"

# the supervisor (fusion.supervisor), importable from here as before
__all__ = ["DEFAULT_DIR", "ProcSpec", "Supervisor", "build_procs", "down", "main", "start_detached", "status", "up"]


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
        ("compactor", ["compact", "--every", "3600"], {}),  # closed days -> Parquet (docs/columnar.md)
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
    write_json(stack_dir / "stack.json", cfg)
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
