"""Status (Redis key, ``fusion trader status``), metrics files and the housekeeping thread of the trader
(a mixin of :class:`trader_svc.service.Trader`)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import keys
from common.log import log_once
from common.metrics import gauge

log = logging.getLogger("trader")
EQUITY = gauge("fusion_trader_equity_usd", "realised + unrealised PnL", ("trader",))
KILLED = gauge("fusion_trader_kill_switch", "1 when the daily-loss kill switch is on", ("trader",))


class StatusReport:
    """``status()``, its publication every ``status_every_s`` and a metrics file every ``metrics_every_s``."""

    cfg: Any
    stats: Any
    engine: Any
    ledger: Any
    model: Any
    store: Any
    r: Any
    lab: str
    started: float
    state_source: str
    champion_error: str | None
    _scan: Any
    _lock: threading.Lock
    _stop: threading.Event
    _load_champion: Callable[..., None]  # trader_svc.swap.ModelSwap provides it in the Trader

    def status(self) -> dict[str, Any]:
        with self._lock:
            pnl = self.engine.snapshot()
            st = self.stats
            lat = np.asarray(st.tick_s, dtype=np.float64)
            return {
                "trader": self.lab, "policy": self.cfg.policy, "markets": self.cfg.markets,
                "model": self.model.version if self.model else None,
                "model_sha256": self.model.sha256 if self.model else None,
                "started": self.started, "updated": time.time(), "running": not self._stop.is_set(),
                "ticks": st.ticks, "decisions": st.decisions, "missed_ticks": sum(st.missed.values()),
                "missed_by_market": dict(st.missed), "last_tick": dict(st.last_tick),
                "feature_mismatches": st.feature_mismatches, "dead_letters": st.dead,
                "swaps": len(st.swaps), "swap_log": st.swaps[-10:], "rejected": len(st.rejected),
                "rejected_log": st.rejected[-10:], "loads": st.loads[-10:],
                "tick_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else None,
                "tick_p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else None,
                "latency_ms": self.cfg.paper.latency_ms, "position_usd": self.cfg.paper.position_usd,
                "max_daily_loss_usd": self.cfg.paper.max_daily_loss_usd, "pnl": pnl,
                "max_exposure_usd": self.cfg.paper.max_exposure_usd,
                "max_trades_per_day": self.cfg.paper.max_trades_per_day, "state_source": self.state_source,
                "state_seq": self.ledger.seq, "pending_records": len(self.ledger.pending),
                "awaiting_settlement": dict(self._scan.awaiting), "cursor_resets": st.cursor_resets,
                "redis_outages": st.redis_outages, "champion_error": self.champion_error,
            }  # fmt: skip

    def _publish_status(self, final: bool = False) -> dict[str, Any]:
        st = self.status()
        if final:
            st["running"] = False
        EQUITY.labels(self.lab).set(st["pnl"]["equity_usd"])
        KILLED.labels(self.lab).set(1.0 if st["pnl"]["kill_switch"] else 0.0)
        try:
            self.r.set(keys.trader_status_key(self.lab), json.dumps(st, default=str))
        except Exception as e:
            log_once(log, "status", "status write failed", error=str(e))
        return st

    def _apply_commands(self) -> int:
        """Operator commands queued on ``trader_command_key`` (``fusion ui``): ``{"cmd": "kill-on"|"kill-off",
        "by": ...}``; an unknown or malformed command is logged once and dropped. Returns how many were applied."""
        try:
            raw = self.r.lpop(keys.trader_command_key(self.lab), 10) or []
        except Exception as e:
            log_once(log, "commands", "operator commands unreadable", error=str(e))
            return 0
        n = 0
        for item in raw:
            try:
                cmd = json.loads(item)
                on = {"kill-on": True, "kill-off": False}[cmd["cmd"]]
            except (ValueError, KeyError, TypeError):
                log_once(log, "bad-command", "operator command refused", command=repr(item)[:200])
                continue
            with self._lock:
                changed = self.engine.operator_kill(on, by=str(cmd.get("by", "operator"))[:64])
            log.warning(
                "kill switch %s by operator (%s)", "tripped" if on else "reset", "changed" if changed else "no change"
            )
            n += 1
        return n

    def _write_metrics(self) -> str | None:
        st = self.status()
        now = time.time()
        key = f"live-metrics/{self.lab}/{time.strftime('%Y-%m-%d', time.gmtime(now))}/{int(now * 1000)}.json"
        try:
            self.store.put(key, json.dumps(st, default=str, indent=1).encode())
        except Exception as e:
            log_once(log, "metrics", "metrics file write failed", error=str(e))
            return None
        return key

    def _housekeep(self) -> None:
        now = time.monotonic()
        due = {"status": now + self.cfg.status_every_s, "metrics": now + self.cfg.metrics_every_s,
               "champion": now + self.cfg.champion_retry_s}  # fmt: skip
        while not self._stop.wait(max(0.01, min(due.values()) - time.monotonic())):
            now = time.monotonic()
            if now >= due["champion"]:
                due["champion"] = now + self.cfg.champion_retry_s
                if self.champion_error is not None:
                    try:
                        self._load_champion()
                    except Exception as e:  # store unreachable: try again later
                        log_once(log, f"champion-retry:{type(e).__name__}", "champion re-read failed", error=str(e))
            if now >= due["status"]:
                due["status"] = now + self.cfg.status_every_s
                self._apply_commands()
                self._publish_status()
            if now >= due["metrics"]:
                due["metrics"] = now + self.cfg.metrics_every_s
                self._write_metrics()
