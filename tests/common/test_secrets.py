"""Credentials never reach logs, printed output, stored files or reports; ``/metrics`` binds loopback unless
configured (issue 10, defect 8). Real redis-server with ``--requirepass``, real service processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from common.redisproc import RedisServer, free_port


@pytest.fixture()
def secret_redis(tmp_path: Path):
    pw = f"pw-{uuid.uuid4().hex[:10]}"
    srv = RedisServer(password=pw, workdir=str(tmp_path / "redis")).start()
    assert redis.Redis.from_url(srv.url).ping()  # the URL with its password really works
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=srv.port).set("x", 1)  # and the password is really required
    yield srv
    srv.close()


def _listen_addresses(port: int) -> set[str]:
    """IPv4 addresses a socket of this machine listens on at ``port`` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return out


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_labeler_log_has_no_password_and_metrics_bind_loopback(secret_redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "labeler.log"
    env = {**os.environ, "FUSION_REDIS_URL": secret_redis.url, "FUSION_METRICS_PORT": str(port)}
    env.pop("FUSION_METRICS_HOST", None)
    with open(log, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "fusion.cli", "label", "--block-ms", "50"], env=env,
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        assert _wait(lambda: "labeler started" in log.read_text() and _listen_addresses(port), 30), log.read_text()
        assert _listen_addresses(port) == {"127.0.0.1"}  # not 0.0.0.0
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    text = log.read_text()
    assert "labeler stopped" in text
    assert secret_redis.password not in text
    assert f"127.0.0.1:{secret_redis.port}" in text  # the URL is logged, redacted


def test_metrics_host_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import metrics
    from common.settings import Settings, get_settings

    assert Settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("FUSION_METRICS_HOST", "0.0.0.0")
    get_settings.cache_clear()
    try:
        port = free_port()
        server = metrics.serve_metrics(port)
        assert server is not None and server.server_address[0] == "0.0.0.0"
        assert _listen_addresses(port) == {"0.0.0.0"}
        server.shutdown()
        server.server_close()
        assert metrics.serve_metrics(0) is None
        port = free_port()
        server = metrics.serve_metrics(port, host="127.0.0.1")
        assert server is not None and _listen_addresses(port) == {"127.0.0.1"}
        server.shutdown()
        server.server_close()
    finally:
        get_settings.cache_clear()


def test_demo_report_has_no_password(secret_redis: RedisServer, tmp_path: Path) -> None:
    from common.store import LocalStore
    from fusion.demo.run import _print_report, _report
    from fusion.demo.stages import Demo

    d = Demo(argparse.Namespace(after=60.0, trade_speed=5.0), tmp_path, ["BTC-5M"])
    d.redis_url = secret_redis.url
    (tmp_path / "logs").mkdir()
    r = redis.Redis.from_url(secret_redis.url)
    rep = _report(d, r, LocalStore(tmp_path / "store"))
    _print_report(rep | {"interrupted": False}, d)
    text = (tmp_path / "report.json").read_text()
    assert secret_redis.password not in text
    assert f"127.0.0.1:{secret_redis.port}" in json.loads(text)["redis"]


@pytest.mark.slow
def test_stack_up_prints_and_stores_no_password(
    secret_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from common import keys
    from fusion import stack

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSION_REDIS_URL", secret_redis.url)
    monkeypatch.setenv("FUSION_STORE_URL", f"file://{tmp_path / 'store'}")
    d = tmp_path / "stack"
    assert stack.main(["up", "--feed", "sim", "--markets", "BTC-15M", "--sim-speed", "5", "--observers", "1",
                       "--replicas", "1", "--dir", str(d), "--grace", "10"]) == 0  # fmt: skip
    try:
        out = capsys.readouterr().out
        assert f"127.0.0.1:{secret_redis.port}" in out
        r = redis.Redis.from_url(secret_redis.url)
        assert _wait(lambda: r.xlen(keys.states_stream("BTC-15M")) >= 3, 60), (
            d / "logs" / "observer-1.log"
        ).read_text()
        assert _wait(lambda: "labeler started" in (d / "logs" / "labeler.log").read_text(), 60)
        assert stack.main(["status", "--dir", str(d), "--json"]) == 0
        out += capsys.readouterr().out
    finally:
        assert stack.main(["down", "--dir", str(d)]) == 0
    out += capsys.readouterr().out
    assert secret_redis.password not in out
    leaked = [str(f) for f in d.rglob("*") if f.is_file() and secret_redis.password.encode() in f.read_bytes()]
    assert leaked == []  # stack.json, status.json, supervisor.log, every process log
