"""Alerts reach a real local HTTP receiver with the right content (presets, de-duplication, rate limit); a receiver
that hangs or refuses never blocks the sender; promotion, rollback and rejection are wired to the sink."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common import alerts
from common.alerts import AlertSink
from common.settings import get_settings


class Receiver:
    """A local webhook endpoint recording every POST body (JSON)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers["content-length"])
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}/hooks/secret-token"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    rc = Receiver()
    yield rc
    rc.close()


def test_json_preset_dedup_and_rate_limit(receiver) -> None:
    sink = AlertSink(receiver.url, "json", service="trader", dedup_s=60, rate_per_min=5)
    assert sink.send("kill-switch", "trader t1 stopped", key="t1/1", trader="t1", day_pnl_usd=-62.1)
    assert not sink.send("kill-switch", "trader t1 stopped", key="t1/1", trader="t1")  # same alert: once
    assert sink.send("kill-switch", "trader t2 stopped", key="t2/1", trader="t2")  # another key: sent
    sent = [sink.send("data-gap", f"gap {i}", key=str(i)) for i in range(10)]
    assert sum(sent) == 3  # 5 per minute in all
    assert sink.flush(10)
    assert len(receiver.bodies) == 5
    first = receiver.bodies[0]
    assert first["kind"] == "kill-switch" and first["text"] == "trader t1 stopped" and first["service"] == "trader"
    assert first["fields"] == {"trader": "t1", "day_pnl_usd": -62.1} and first["key"] == "t1/1" and first["v"] == 1
    assert sink.counts == {"deduplicated": 1, "rate_limited": 7, "sent": 5}


@pytest.mark.parametrize(("fmt", "field"), [("slack", "text"), ("discord", "content")])
def test_chat_presets(receiver, fmt: str, field: str) -> None:
    sink = AlertSink(receiver.url, fmt, service="trainer")
    sink.send("model-promoted", "BTC-15M v2 is the champion", key="BTC-15M/v2")
    assert sink.flush(10)
    assert receiver.bodies == [{field: "[trainer] model-promoted: BTC-15M v2 is the champion"}]


def test_hanging_and_refusing_endpoints_never_block(caplog) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # accepts connections (backlog), never answers
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens: connection refused
    try:
        slow = AlertSink(f"http://127.0.0.1:{hang.getsockname()[1]}/x", rate_per_min=10_000, queue_size=10,
                         timeout_s=2.0)  # fmt: skip
        worst = 0.0
        for i in range(1000):
            t0 = time.perf_counter()
            slow.send("lag", f"lag {i}", key=str(i))
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 0.05  # the caller never waits for the endpoint
        assert slow.counts.get("queue_full", 0) >= 980  # bounded: the rest dropped, counted
        refused = AlertSink(f"http://127.0.0.1:{dead_port}/x")
        assert refused.send("kill-switch", "x")
        assert refused.flush(10) and refused.counts == {"failed": 1}
    finally:
        hang.close()
    assert "secret" not in caplog.text


def test_promotion_rejection_and_rollback_are_alerted(receiver, monkeypatch, tmp_path) -> None:
    from common import artefact as registry
    from common.store import LocalStore
    from tests.trader_svc.helpers import save_good

    monkeypatch.setenv("FUSION_ALERT_WEBHOOK_URL", receiver.url)
    get_settings.cache_clear()
    alerts.reset()
    try:
        store = LocalStore(tmp_path / "s")
        save_good(store, "al-pol", "v1")
        save_good(store, "al-pol", "v2", seed=1)
        registry.promote(store, "al-pol", "v1")
        registry.promote(store, "al-pol", "v2")
        registry.rollback(store, "al-pol")
        assert alerts.notify("model-rejected", "al-pol v3 not promoted: does not beat hold", key="al-pol/v3")
        s = alerts.sink()
        assert s is not None and s.flush(10)
    finally:
        alerts.reset()
        get_settings.cache_clear()
    got = [(b["kind"], b["fields"].get("version")) for b in receiver.bodies]
    assert got == [("model-promoted", "v1"), ("model-promoted", "v2"), ("model-rolled-back", "v1"),
                   ("model-rejected", None)]  # fmt: skip
    monkeypatch.delenv("FUSION_ALERT_WEBHOOK_URL")
    try:
        assert alerts.sink() is None  # off by default: nothing configured, nothing sent
        assert alerts.notify("kill-switch", "x") is False
    finally:
        get_settings.cache_clear()


def test_a_forked_child_sends_its_own_alerts_before_os_exit(receiver, monkeypatch) -> None:
    """RQ's work-horse: forked from a process whose sink already runs its sender thread, ending with os._exit.
    The child starts its own sink and ``alerts.flush()`` delivers before the exit."""
    import os

    monkeypatch.setenv("FUSION_ALERT_WEBHOOK_URL", receiver.url)
    get_settings.cache_clear()
    alerts.reset()
    try:
        assert alerts.notify("model-promoted", "parent", key="p")
        assert alerts.flush(10)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            ok = alerts.notify("model-rejected", "child", key="c") and alerts.flush(10)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        deadline = time.monotonic() + 10
        while len(receiver.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [b["text"] for b in receiver.bodies] == ["parent", "child"]
    finally:
        alerts.reset()
        monkeypatch.delenv("FUSION_ALERT_WEBHOOK_URL")
        get_settings.cache_clear()
