"""``fusion ui``'s web application (Flask + Jinja2 templates, Chart.js served as a static file).

Pages: ``/markets``, ``/archive``, ``/training``, ``/trader`` (HTML; ``?fragment=1`` returns only the part that
refreshes, which the page polls every ``refresh_s``), the same figures as JSON under ``/api/<page>``, and
``POST /action/<name>`` (token in the ``X-Fusion-Token`` header or the ``token`` form field).

Guarantees: read-only unless a token is configured (see :mod:`fusion.ui.actions`); every page's cost per refresh
is bounded (see :mod:`fusion.ui.markets`, :mod:`fusion.ui.storeview`, :mod:`fusion.ui.redisview`); a Redis or
store failure shows as an error on the page, never a crash of the server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request

from common.metrics import counter, histogram
from common.store import ObjectStore
from fusion.ui import charts
from fusion.ui.actions import ACTIONS, Refused, check_token, run_action
from fusion.ui.markets import MarketsView
from fusion.ui.redisview import dead_letters, trader_view, training_jobs
from fusion.ui.storeview import CachedStore, archive_calendar, decision_words, registry_view

log = logging.getLogger("ui")
PAGES = ("markets", "archive", "training", "trader")
PAGE_SECONDS = histogram("fusion_ui_page_seconds", "time to read one page's figures", ("page",))
ACTIONS_TOTAL = counter("fusion_ui_actions_total", "actions asked of the UI", ("action", "outcome"))


class Collector:
    """Everything a page shows, read at a bounded cost (one instance per server: it keeps the incremental state)."""

    def __init__(self, r: Any, store: ObjectStore, *, tick_ms: int = 500, window_s: int = 600, hours: float = 3.0,
                 page_size: int = 50, cache_s: float = 30.0, replicas: int = 1) -> None:  # fmt: skip
        self.r, self.window_s = r, window_s
        self.cs = CachedStore(store, ttl_s=cache_s)
        self.markets = MarketsView(r, tick_ms=tick_ms, hours=hours, page_size=page_size, replicas=replicas)
        self._lock = threading.Lock()
        self.curves: dict[str, dict[float, dict[str, float]]] = {}  # running job -> progress -> its figures

    def _follow_jobs(self, jobs: dict[str, list[dict[str, Any]]]) -> None:
        """Learning curves of running jobs as the UI sees them (the figures of each progress step, 500 at most)."""
        live = {j["id"] for j in jobs.get("running", [])}
        for jid in [k for k in self.curves if k not in live]:
            del self.curves[jid]
        for j in jobs.get("running", []):
            nums = {k: float(v) for k, v in j["last"].items() if isinstance(v, int | float) and k != "epoch"}
            pts = self.curves.setdefault(j["id"], {})
            if nums and len(pts) < 500:
                pts[round(j["progress"], 4)] = nums
        for j in jobs.get("running", []):
            j["curve"] = sorted(self.curves.get(j["id"], {}).items())

    def page(self, name: str, args: dict[str, str]) -> dict[str, Any]:
        with self._lock:  # one refresh at a time: the incremental readers are not shared between threads
            if name == "markets":
                return self.markets.collect(page=int(args.get("page", "0") or 0))
            if name == "archive":
                dead = dead_letters(self.r)
                return {"calendar": archive_calendar(self.cs, self.window_s, dead), "dead_letters": dead[:50]}
            if name == "training":
                reg = registry_view(self.cs)
                for p in reg:
                    for v in p["versions"]:
                        v["decision_words"] = decision_words(v)
                jobs = training_jobs(self.r)
                self._follow_jobs(jobs)
                return {"jobs": jobs, "registry": reg}
            if name == "trader":
                return trader_view(self.r)
        raise KeyError(name)


def create_app(collector: Collector, token: str | None = None, refresh_s: float = 5.0) -> Flask:
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False

    def _data(name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            with PAGE_SECONDS.labels(name).time():
                return collector.page(name, dict(request.args)), None
        except Exception as e:  # Redis or store down: say so on the page, keep serving
            log.warning("page %s failed: %s", name, e)
            return None, f"{type(e).__name__}: {e}"

    @app.get("/")
    def index() -> Any:
        return page("markets")

    @app.get("/<name>")
    def page(name: str) -> Any:
        if name not in PAGES:
            abort(404)
        t0 = time.perf_counter()
        data, error = _data(name)
        ch = charts.for_page(name, data) if data is not None else []
        ctx = {"page": name, "pages": PAGES, "d": data, "error": error, "charts": ch, "actions": bool(token),
               "refresh_ms": int(refresh_s * 1000), "render_ms": 0.0}  # fmt: skip
        tpl = f"{name}.html"
        ctx["render_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if request.args.get("fragment"):
            return render_template(tpl, fragment=True, **ctx)
        return render_template("base.html", tpl=tpl, fragment=False, **ctx)

    @app.get("/api/<name>")
    def api(name: str) -> Any:
        if name not in PAGES:
            abort(404)
        data, error = _data(name)
        if data is None:
            return jsonify({"error": error}), 503
        return Response(json.dumps(data, default=str), mimetype="application/json")

    @app.post("/action/<name>")
    def action(name: str) -> Any:
        form = {k: str(v) for k, v in request.form.items() if k != "token"}
        given = request.headers.get("X-Fusion-Token") or request.form.get("token")
        remote = request.remote_addr or "?"
        try:
            check_token(token, given)
            out = run_action(name, form, collector.r, collector.cs.store, remote)
        except Refused as e:
            ACTIONS_TOTAL.labels(name if name in ACTIONS else "?", "refused").inc()
            log.warning("ui action %s refused (%s): %s", name, remote, e)
            return jsonify({"ok": False, "error": str(e)}), e.status
        collector.cs.invalidate()
        ACTIONS_TOTAL.labels(name, "done").inc()
        return jsonify({"ok": True, **out})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True})

    return app
