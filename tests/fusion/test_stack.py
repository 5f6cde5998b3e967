"""fusion.stack: supervision (restart with backoff, graceful stop), the detached supervisor, and
`fusion stack up --feed sim` really publishing into a private Redis."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import redis

from common import keys
from common.redisproc import free_port
from fusion import stack

PY = sys.executable
SLEEPER = [PY, "-c", "import time; print('sleeping', flush=True); time.sleep(100)"]
CRASHER = [PY, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
# ignores SIGTERM: only the SIGKILL after the grace period stops it
STUBBORN = [
    PY,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(100)",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _run(sup: stack.Supervisor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sup.poll()
        time.sleep(0.01)


def test_crashing_process_is_restarted_with_backoff_and_counted(tmp_path: Path) -> None:
    sup = stack.Supervisor([stack.ProcSpec("sleeper", SLEEPER), stack.ProcSpec("crasher", CRASHER)], tmp_path / "logs",
                           backoff_s=0.1, backoff_max_s=0.4, stable_s=30.0)  # fmt: skip
    sup.start()
    _run(sup, 2.5)
    st = {s["name"]: s for s in sup.status()}
    sleeper_pid = st["sleeper"]["pid"]
    assert st["sleeper"]["up"] and st["sleeper"]["restarts"] == 0 and _alive(sleeper_pid)
    # delays 0.1, 0.2, 0.4, 0.4, ...: in 2.5 s about 6-7 restarts; a tight loop would make hundreds
    assert 4 <= st["crasher"]["restarts"] <= 9, st["crasher"]
    assert st["crasher"]["last_exit"] == 3
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.count("boom") == st["crasher"]["restarts"] + (1 if st["crasher"]["up"] else 0) or log.count("boom") >= 4
    assert "exited with 3" in log and "restart in 0.40 s" in log
    sup.stop(grace_s=5)
    assert not _alive(sleeper_pid)
    assert all(not s["up"] for s in sup.status())
    n = sup.procs[1].restarts
    _run(sup, 0.3)  # stopped: nothing is restarted any more
    assert sup.procs[1].restarts == n


def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    sup = stack.Supervisor(
        [stack.ProcSpec("crasher", CRASHER)], tmp_path, backoff_s=0.05, backoff_max_s=10, stable_s=0.0
    )
    sup.start()
    # every run counts as stable, so the delay never grows past the base (run until 5 restarts: a busy
    # machine starts the crasher more slowly, which must not matter)
    deadline = time.monotonic() + 15
    delays: list[str] = []
    while (len(delays) < 5 or sup.procs[0].restarts < 5) and time.monotonic() < deadline:
        _run(sup, 0.5)
        delays = re.findall(r"restart in ([0-9.]+) s", (tmp_path / "crasher.log").read_text())
    assert len(delays) >= 5 and set(delays) == {"0.05"}
    assert sup.procs[0].restarts >= 5
    sup.stop(1)


def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    sup = stack.Supervisor([stack.ProcSpec("stubborn", STUBBORN)], tmp_path)
    sup.start()
    deadline = time.monotonic() + 5
    while "\nready\n" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = sup.status()[0]["pid"]
    t0 = time.monotonic()
    sup.stop(grace_s=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert not _alive(pid) and sup.procs[0].last_exit == -9


def _write_stack(d: Path, procs: list[stack.ProcSpec], grace_s: float = 5.0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"procs": [p.__dict__ for p in procs], "grace_s": grace_s,
           "supervisor": {"backoff_s": 0.1, "backoff_max_s": 0.5, "stable_s": 30.0}}  # fmt: skip
    (d / "stack.json").write_text(json.dumps(cfg))


def test_detached_supervisor_status_and_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "stack"
    _write_stack(d, [stack.ProcSpec("sleeper", SLEEPER), stack.ProcSpec("crasher", CRASHER)])
    sup_pid = stack.start_detached(d)
    assert _alive(sup_pid) and int((d / "supervisor.pid").read_text()) == sup_pid
    time.sleep(1.5)
    assert stack.main(["status", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "sleeper" in out and "crasher" in out and "up" in out and "sleeping" in out
    assert stack.main(["status", "--dir", str(d), "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    procs = {p["name"]: p for p in snap["procs"]}
    assert snap["alive"] and procs["sleeper"]["up"] and procs["crasher"]["restarts"] >= 2
    sleeper = procs["sleeper"]["pid"]

    assert stack.main(["down", "--dir", str(d)]) == 0
    assert not _alive(sup_pid) and not _alive(sleeper)
    assert not (d / "supervisor.pid").exists()
    assert stack.main(["status", "--dir", str(d)]) == 3  # not running
    assert "not running" in capsys.readouterr().out
    assert stack.main(["down", "--dir", str(d)]) == 0  # idempotent


def test_up_refuses_a_second_stack_in_the_same_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "stack"
    _write_stack(d, [stack.ProcSpec("sleeper", SLEEPER)])
    stack.start_detached(d)
    try:
        assert stack.main(["up", "--dir", str(d)]) == 1
        assert "already running" in capsys.readouterr().out
    finally:
        assert stack.main(["down", "--dir", str(d)]) == 0


def test_stack_up_sim_publishes_into_a_private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FUSION_REDIS_URL does not answer -> the stack runs its own redis-server; observers publish states."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSION_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("FUSION_STORE_URL", f"file://{tmp_path / 'store'}")
    d = tmp_path / "stack"
    assert stack.main(["up", "--feed", "sim", "--markets", "BTC-15M", "--sim-speed", "5", "--dir", str(d),
                       "--grace", "10"]) == 0  # fmt: skip
    try:
        cfg = json.loads((d / "stack.json").read_text())
        names = [p["name"] for p in cfg["procs"]]
        assert names[:4] == ["redis", "sim", "observer-1", "observer-2"] and "archiver" in names
        url = cfg["env"]["FUSION_REDIS_URL"]
        assert url != os.environ["FUSION_REDIS_URL"]
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 40
        n = 0
        while time.monotonic() < deadline:
            try:
                n = r.xlen(keys.states_stream("BTC-15M"))
            except redis.ConnectionError:
                n = 0
            if n >= 5:
                break
            time.sleep(0.5)
        assert n >= 5, (d / "logs" / "observer-1.log").read_text()[-2000:]
        snap = json.loads((d / "status.json").read_text())
        obs = [p for p in snap["procs"] if p["name"].startswith("observer")]
        assert all(p["up"] and p["restarts"] == 0 for p in obs), obs
    finally:
        assert stack.main(["down", "--dir", str(d)]) == 0
    snap = json.loads((d / "status.json").read_text())
    assert snap["state"] == "stopped" and not any(p["up"] for p in snap["procs"])
    assert all(not _alive(p["pid"]) for p in cfg["procs"] if p.get("pid"))


def test_a_second_stack_gets_its_own_dashboard_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI's port (FUSION_UI_PORT, 8050) is used when free; when something else holds it (another stack or
    demo on this machine) the stack's UI gets a free port instead of a process that dies on bind."""
    import argparse
    import socket

    from common.settings import Settings

    monkeypatch.setenv("FUSION_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    ns = argparse.Namespace(markets=["BTC-15M"], feed="live", sim_speed=1.0, replicas=2, observers=1,
                            metrics_base=0)  # fmt: skip
    wanted = free_port()
    monkeypatch.setenv("FUSION_UI_PORT", str(wanted))

    def ui_port() -> int:
        procs, _ = stack.build_procs(ns, Settings(), tmp_path)
        return int(next(p for p in procs if p.name == "ui").env["FUSION_UI_PORT"])

    assert ui_port() == wanted
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", wanted))
        held.listen()
        other = ui_port()
        assert other != wanted
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", other))  # really free
