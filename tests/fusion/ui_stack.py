"""A small running stack for the UI's tests: private Redis, the simulator, an observer, archiver, labeler and a
paper trader (real processes), a local store with a registry of two versions, and ``fusion ui`` itself; plus a
headless Debian ``chromium`` that renders a page (its JavaScript run) to a DOM and a screenshot."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from common import artefact as registry
from common.policy import architecture, init_weights, meta_features
from common.redisproc import RedisServer
from common.store import LocalStore
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread
from tests.test_pipeline_faults import Procs, _wait
from tests.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
MARKETS = ["BTC-5M", "ETH-5M"]
POLICY, TRADER, TOKEN = "uipol", "ui-trader", "s3cret-ui-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def meta(pnl: float, promote: bool, reason: str) -> dict[str, Any]:
    hist = [{"epoch": e, "loss": round(1.0 / (e + 1), 4), "val_pnl": round(pnl * e / 5, 4)} for e in range(6)]
    return {
        **meta_features(), "architecture": architecture(), "algorithm": "awbc", "backend": "torch",
        "holdout_metrics": {"pnl": pnl, "sharpe": 0.5, "trades": 40},
        "baselines_metrics": {"hold": {"pnl": 0.0}, "momentum": {"pnl": pnl / 2}},
        "decision": {"promote": promote, "reason": reason}, "training": {"history": hist},
    }  # fmt: skip


def always_buy_up() -> dict[str, np.ndarray]:
    w = init_weights(0)
    w["actor.out.weight"] = np.zeros_like(w["actor.out.weight"])
    b = np.zeros_like(w["actor.out.bias"])
    b[1] = 10.0
    w["actor.out.bias"] = b
    return w


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer(workdir=str(tmp / "redis")).start()
        self.store = LocalStore(tmp / "store")
        self.v1 = registry.save_model(self.store, POLICY, always_buy_up(), meta(1.5, True, "beat every baseline"),
                                      version="v20260101-000000-aaaa").version  # fmt: skip
        self.v2 = registry.save_model(self.store, POLICY, init_weights(3), meta(-0.4, False, "PnL below hold"),
                                      version="v20260102-000000-bbbb").version  # fmt: skip
        registry.promote(self.store, POLICY, self.v1)
        self.sim = SimServerThread(SyntheticDriver(MARKETS, seed=5, speed=60.0, lag_s=20.0)).start()
        self.ui_port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "FUSION_REDIS_URL": self.redis.url,
                    "FUSION_STORE_URL": self.store.url, "FUSION_FEED": "sim", "FUSION_SIM_URL": self.sim.url,
                    "FUSION_MARKETS": ",".join(MARKETS), "FUSION_DISCOVERY_LEAD_S": "600",
                    "FUSION_ARCHIVE_WINDOW_S": "300", "FUSION_ARCHIVE_GRACE_S": "5",
                    "FUSION_CACHE_DIR": str(tmp / "cache"), "FUSION_TRADER_MARKETS": ",".join(MARKETS),
                    "FUSION_TRADER_ID": TRADER, "FUSION_POLICY": POLICY, "FUSION_UI_TOKEN": TOKEN,
                    "FUSION_UI_PORT": str(self.ui_port), "FUSION_UI_CACHE_S": "0",
                    "FUSION_UI_REFRESH_S": "1"}  # fmt: skip
        (tmp / "logs").mkdir(exist_ok=True)
        self.procs = Procs(self.env, tmp / "logs")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def start(self) -> None:
        for name, argv in [
            ("observer", ("observe", "--leases")),
            ("archiver", ("archive", "--consumer", "a1")),
            ("labeler", ("label", "--consumer", "l1")),
            ("trader", ("trade",)),
            ("ui", ("ui",)),
        ]:
            self.procs.start(name, *argv)  # fmt: skip
        _wait(self._ui_up, 60, "fusion ui answering")

    def _ui_up(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_producers(self) -> None:
        for name in ("observer", "archiver", "labeler"):
            self.procs.stop(name)

    def close(self) -> None:
        self.procs.stop_all()
        self.sim.stop()
        self.redis.close()


def chromium(url: str, shot: Path | None = None, budget_ms: int = 4000) -> str:
    """The DOM of ``url`` after its scripts ran (``--dump-dom``); a PNG screenshot too when ``shot``."""
    assert CHROMIUM, "Debian's chromium is required (apt-get install -y chromium)"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--user-data-dir={shot.parent / '.chromium' if shot else '/tmp/ui-chromium'}",
            f"--virtual-time-budget={budget_ms}"]  # fmt: skip
    if shot is not None:
        subprocess.run([*base, "--window-size=1400,1500", f"--screenshot={shot}", url], check=True, timeout=120,
                       capture_output=True)  # fmt: skip
    out = subprocess.run([*base, "--dump-dom", url], check=True, timeout=120, capture_output=True, text=True)
    return out.stdout


class Cells(HTMLParser):
    """Text of the elements carrying a ``data-k`` (within rows keyed by data-market / data-version / ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.attrs_of: list[dict[str, str]] = []
        self._row: str | None = None
        self._key: str | None = None
        self._buf: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.attrs_of.append({"tag": tag, **a})
        for rk in ("data-market", "data-version", "data-trader", "data-job"):
            if rk in a and tag in ("tr", "table"):
                self._row = a[rk]
                self.rows.setdefault(self._row, {})
        if self._key is not None:
            self._depth += 1
        elif "data-k" in a and self._row is not None:
            self._key, self._buf, self._depth = a["data-k"], [], 0

    def handle_endtag(self, tag: str) -> None:
        if self._key is None:
            return
        if self._depth:
            self._depth -= 1
            return
        assert self._row is not None
        self.rows[self._row][self._key] = " ".join("".join(self._buf).split())
        self._key = None

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self._buf.append(data)


def parse(dom: str) -> Cells:
    c = Cells()
    c.feed(dom)
    return c


def wait(cond: Any, timeout: float, what: str) -> None:
    wait_until(cond, timeout, what, step=0.3)


__all__ = ["Stack", "chromium", "parse", "wait", "sys"]
