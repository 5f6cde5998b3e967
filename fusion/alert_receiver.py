"""A local webhook receiver that records every alert it is sent, for the demo and for trying alerts out.

``fusion alerts listen [--port 8099] [--out alerts.jsonl]`` (or :class:`AlertReceiver` in a process): point
``FUSION_ALERT_WEBHOOK_URL`` at ``http://127.0.0.1:PORT/alerts`` and every POST body (the ``json`` preset's
``{v, kind, key, text, fields, service, ts_ms}``; the chat presets' ``{"text"}`` / ``{"content"}``) is appended to
the file as one JSON line, with the time it arrived (``received_ms``). :func:`read_alerts` reads them back. Bound to
127.0.0.1; a body that is not JSON is recorded as ``{"raw": ...}`` (at most 64 KiB read), never refused.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 64 * 1024


class AlertReceiver:
    """Records alerts to ``path`` (JSON lines) on ``http://host:port/...``; ``start()`` / ``close()``."""

    def __init__(self, path: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = min(int(self.headers.get("content-length") or 0), MAX_BODY)
                raw = self.rfile.read(n)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                outer.record(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.url = f"http://{host}:{self.server.server_port}/alerts"
        self._thread: threading.Thread | None = None

    def record(self, body: Any) -> None:
        line = json.dumps(
            {"received_ms": int(time.time() * 1000), **(body if isinstance(body, dict) else {"body": body})}
        )
        with self._lock, self.path.open("a") as f:
            f.write(line + "\n")

    def start(self) -> AlertReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, name="alert-receiver", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_alerts(path: str | Path) -> list[dict[str, Any]]:
    """The alerts recorded in ``path`` (oldest first); [] when there is none."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion alerts", description="a local webhook receiver that records alerts")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("listen", help="record every alert POSTed to http://127.0.0.1:PORT/alerts")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--out", default="alerts.jsonl", help="JSON lines file the alerts are appended to")
    s = sub.add_parser("show", help="print the alerts recorded in a file")
    s.add_argument("file")
    a = ap.parse_args(argv)
    if a.cmd == "show":
        for al in read_alerts(a.file):
            print(f"{al.get('kind', '?')}\t{al.get('key', '')}\t{al.get('text') or al.get('content') or ''}")
        return 0
    rc = AlertReceiver(a.out, port=a.port).start()
    print(f"recording alerts sent to {rc.url} in {a.out}; set FUSION_ALERT_WEBHOOK_URL={rc.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        rc.close()
    return 0
