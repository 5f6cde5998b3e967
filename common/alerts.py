"""Alerts to people through an incoming webhook (one JSON POST per alert), off unless configured.

Guarantees:

* **never blocks a service**: :meth:`AlertSink.send` only does bookkeeping and a ``put_nowait`` on a bounded queue;
  a background daemon thread POSTs (timeout ``alert_timeout_s``). A dead, refusing or hanging endpoint costs the
  caller nothing: when the queue is full new alerts are dropped and counted (``fusion_alerts_total{result}``).
* **de-duplicated and rate-limited**: the same ``(kind, key)`` is sent at most once per ``alert_dedup_s``; at most
  ``alert_rate_per_min`` alerts per minute (token bucket); the rest are counted as ``deduplicated`` /
  ``rate_limited``, and logged once per kind.
* **presets**: ``json`` (``{v, kind, key, text, fields, service, ts_ms}``), ``slack`` (``{"text": ...}``),
  ``discord`` (``{"content": ...}``).
* **no secret leaks**: the webhook URL (whose path is the secret for Slack/Discord) is a ``SecretStr`` setting and
  is never logged: logs name only its host. Field values pass :func:`common.log.redact_value`.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from common.log import kv, log_once, redact, redact_value
from common.metrics import counter

log = logging.getLogger("alerts")
SENT = counter("fusion_alerts_total", "alerts by outcome", ("kind", "result"))
ALERT_VERSION = 1
FORMATS = ("json", "slack", "discord")


def payload(fmt: str, kind: str, key: str, text: str, fields: dict[str, Any], service: str) -> dict[str, Any]:
    """The POST body of an alert in preset ``fmt``."""
    line = f"[{service}] {kind}: {text}"
    if fmt == "slack":
        return {"text": line}
    if fmt == "discord":
        return {"content": line[:2000]}
    return {"v": ALERT_VERSION, "kind": kind, "key": key, "text": text, "fields": fields, "service": service,
            "ts_ms": int(time.time() * 1000)}  # fmt: skip


class AlertSink:
    """One webhook sink with its sender thread (started on the first alert)."""

    def __init__(self, url: str, fmt: str = "json", *, service: str = "fusion", dedup_s: float = 300.0,
                 rate_per_min: int = 20, queue_size: int = 100, timeout_s: float = 5.0) -> None:  # fmt: skip
        if fmt not in FORMATS:
            raise ValueError(f"alert format {fmt!r} not one of {FORMATS}")
        self.url, self.fmt, self.service = url, fmt, service
        self.host = urlsplit(url).hostname or "?"
        self.dedup_s, self.rate_per_min, self.timeout_s = dedup_s, rate_per_min, timeout_s
        self.q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self.counts: dict[str, int] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._tokens, self._refilled = float(rate_per_min), time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.pid = os.getpid()  # the process whose sender thread drains the queue

    def _count(self, kind: str, result: str) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1
        SENT.labels(kind, result).inc()

    def send(self, kind: str, text: str, key: str = "", *, dedup: bool = True, **fields: Any) -> bool:
        """Queue an alert; True when queued (False: deduplicated, rate-limited or queue full). Never blocks.
        ``dedup=False`` skips the per-period de-duplication (the caller de-duplicates per episode,
        :mod:`common.episodes`); the rate limit still applies."""
        now = time.monotonic()
        with self._lock:
            last = self._seen.get((kind, key))
            if dedup and last is not None and now - last < self.dedup_s:
                self._count(kind, "deduplicated")
                return False
            self._tokens = min(float(self.rate_per_min), self._tokens + (now - self._refilled) * self.rate_per_min / 60)
            self._refilled = now
            if self._tokens < 1.0:
                self._count(kind, "rate_limited")
                log_once(log, f"alert-rate:{kind}", "alerts rate-limited; dropped", kind=kind)
                return False
            body = payload(self.fmt, kind, key, redact(text), redact_value(fields), self.service)
            try:
                self.q.put_nowait(body | {"_kind": kind})
            except queue.Full:
                self._count(kind, "queue_full")
                log_once(log, f"alert-full:{kind}", "alert queue full (endpoint slow or down); dropped", kind=kind,
                         host=self.host)  # fmt: skip
                return False
            self._tokens -= 1.0
            self._seen[(kind, key)] = now
            if len(self._seen) > 10_000:  # forget old keys
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.dedup_s}
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
                self._thread.start()
        return True

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                try:
                    body = self.q.get(timeout=0.5)
                except queue.Empty:
                    continue
                kind = body.pop("_kind")
                try:
                    resp = client.post(self.url, content=orjson.dumps(body),
                                       headers={"content-type": "application/json"})  # fmt: skip
                    ok = resp.status_code < 300
                    self._count(kind, "sent" if ok else f"http_{resp.status_code}")
                    if not ok:
                        log_once(log, f"alert-http:{resp.status_code}", "webhook refused an alert", host=self.host,
                                 status=resp.status_code)  # fmt: skip
                except httpx.HTTPError as e:
                    self._count(kind, "failed")
                    log_once(log, f"alert-fail:{type(e).__name__}", "webhook unreachable; alert dropped",
                             host=self.host, error=type(e).__name__)  # fmt: skip
                finally:
                    self.q.task_done()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued alert was attempted (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.q.unfinished_tasks

    def close(self) -> None:
        self._stop.set()


_sink: AlertSink | None = None
_sink_lock = threading.Lock()
_service = "fusion"


def set_service(name: str) -> None:
    """Name this process's alerts (``service`` of the JSON preset, ``[name]`` of the chat presets)."""
    global _service
    _service = name
    with _sink_lock:
        if _sink is not None:
            _sink.service = name


def enabled() -> bool:
    """True when alerts are configured (``alert_webhook_url`` set)."""
    from common.settings import get_settings

    return bool(get_settings().alert_webhook_url.get_secret_value())


def sink() -> AlertSink | None:
    """The process's sink from settings (None when ``alert_webhook_url`` is empty)."""
    global _sink
    from common.settings import get_settings

    with _sink_lock:
        if _sink is None:
            s = get_settings()
            url = s.alert_webhook_url.get_secret_value()
            if not url:
                return None
            _sink = AlertSink(url, s.alert_format, service=_service, dedup_s=s.alert_dedup_s,
                              rate_per_min=s.alert_rate_per_min, queue_size=s.alert_queue,
                              timeout_s=s.alert_timeout_s)  # fmt: skip
            kv(log, logging.INFO, "alerts on", host=_sink.host, format=s.alert_format)
        return _sink


def notify(kind: str, text: str, key: str = "", *, dedup: bool = True, **fields: Any) -> bool:
    """Send an alert through the configured sink; a no-op (False) when alerts are off. Never raises."""
    try:
        s = sink()
        return s.send(kind, text, key, dedup=dedup, **fields) if s is not None else False
    except Exception as e:  # alerts must never take a service down
        log_once(log, f"alert-error:{type(e).__name__}", "alert not sent", error=type(e).__name__)
        return False


EXIT_FLUSH_S = 3.0  # the longest an ending process waits for its last alerts: a hanging endpoint never holds a stop


def flush(timeout_s: float | None = None) -> bool:
    """Wait (at most ``timeout_s``, default the lower of the POST timeout and :data:`EXIT_FLUSH_S`) until this
    process's queued alerts were attempted. Called at exit, and by a process that ends with ``os._exit`` (RQ's
    work-horse) before it does. True when nothing is left (or alerts are off)."""
    with _sink_lock:
        s = _sink
    if s is None or s.pid != os.getpid():
        return True
    return s.flush(min(s.timeout_s, EXIT_FLUSH_S) if timeout_s is None else timeout_s)


def _after_fork_in_child() -> None:
    """A forked child (RQ's work-horse) inherits the parent's sink but not its sender thread: start afresh."""
    global _sink, _sink_lock
    _sink, _sink_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush)


def reset() -> None:
    """Forget the process's sink (tests; after settings change)."""
    global _sink
    with _sink_lock:
        if _sink is not None:
            _sink.close()
        _sink = None
