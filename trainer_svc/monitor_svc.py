"""``fusion monitor``: the serving model's live results against its hold-out and its own backtest; alert, roll back.

The IO around the pure parts (placement: see :mod:`trainer_svc.monitor`). Each cycle (every ``monitor_every_s``):

1. the champion of ``policy`` (:func:`common.artefact.champion`); a new one starts a fresh :class:`Machine`;
2. the trader's new records (``fusion:{T}:trades`` from the stored cursor) folded into :class:`LiveFold`;
3. per market the trader decided on, the archived states from the end of the last checked window
   (:func:`archiver_svc.reader.load_market`), segmented into Polymarket windows (:func:`trainer_svc.windows.segment`);
   a window is judged once it is settled in the archive and closed on the trader's side, and only when the
   champion alone decided in it over at least ``monitor_min_coverage`` of it (else it is skipped, with the reason);
4. the judged windows are replayed with the champion (:func:`trainer_svc.backtest.replay_windows`, the environment
   of its meta.json) and fed, oldest end first, to the machine with their live PnL;
5. a trip alerts (:func:`common.alerts.notify`, kind ``monitor-tripped``) and, with ``monitor_rollback``, rolls the
   champion back (:func:`common.artefact.rollback`, which publishes ``model-rolled-back`` with the reason), only
   while the judged version is still the champion.

Guarantees: the state (cursor, fold, machine, checked windows, recent verdicts, a pending action) is one Redis hash
(:func:`common.keys.monitor_state_key`) written in one MULTI after each cycle, and the trip is stored *before* it
is acted on (then the action's outcome): a restart resumes where it stopped, judges no window twice and never
rolls back twice for one trip. Undecodable records are counted and skipped; a failing cycle (store or Redis
down) is logged once and retried, never fatal.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
from typing import Any

import msgpack

from common import artefact, keys
from common.alerts import notify
from common.log import kv, log_once
from common.metrics import counter, gauge
from trainer_svc.live_windows import LiveFold
from trainer_svc.monitor import HoldoutRef, Machine, MonitorConfig, Verdict, WindowResult

log = logging.getLogger("monitor")
WINDOWS = counter("fusion_monitor_windows_total", "windows seen by the monitor", ("policy", "result"))
TRIPS = counter("fusion_monitor_trips_total", "monitor trips", ("policy", "action"))
CONSEC = gauge(
    "fusion_monitor_consecutive_breaches", "consecutive breaches of the current champion", ("policy", "rule")
)
RECENT = 200  # verdicts kept in the state (the demo's comparison)
SPAN_MS = 8 * 3_600_000  # archive read per market and cycle: longer than any window plus its settlement
READ = 5000


class MonitorService:
    """One policy watched through one trader's records. :meth:`step` is one cycle; :meth:`run` loops."""

    def __init__(self, r: Any, store: Any, policy: str, trader: str, cfg: MonitorConfig | None = None,
                 rollback: bool = False, min_coverage: float = 0.5,
                 markets: list[str] | None = None) -> None:  # fmt: skip
        self.r, self.store, self.policy, self.trader = r, store, policy, trader
        self.cfg, self.rollback_on, self.min_coverage = cfg or MonitorConfig(), rollback, min_coverage
        self.markets = markets
        self.key = keys.monitor_state_key(policy, trader)
        self._models: dict[str, tuple[dict[str, Any], dict[str, Any], HoldoutRef]] = {}
        self.load()

    # ------------------------------------------------------------------ state
    def load(self) -> None:
        h = self.r.hgetall(self.key)
        st = msgpack.unpackb(h[b"d"], raw=False) if b"d" in h else {}
        self.cursor: str = st.get("cursor", "0-0")
        self.fold = LiveFold.from_dict(st.get("fold") or {})
        self.machine = Machine.from_dict(st.get("machine") or {})
        self.checked: dict[str, int] = dict(st.get("checked") or {})
        self.recent: list[dict[str, Any]] = list(st.get("recent") or [])
        self.pending: dict[str, Any] | None = st.get("pending")
        self.last: dict[str, Any] = dict(st.get("last") or {})

    def save(self) -> None:
        st = {"cursor": self.cursor, "fold": self.fold.to_dict(), "machine": self.machine.to_dict(),
              "checked": self.checked, "recent": self.recent[-RECENT:], "pending": self.pending,
              "last": self.last}  # fmt: skip
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key, mapping={"d": msgpack.packb(st, use_bin_type=True),
                                     "summary": json.dumps(self.last, default=str)})  # fmt: skip
        pipe.execute()

    # ------------------------------------------------------------------ one cycle
    def step(self) -> list[Verdict]:
        """Read, judge, act, store. Returns the verdicts of the windows judged in this cycle."""
        if self.pending:
            self._act(self.pending)
        self._read_records()
        ptr = artefact.champion(self.store, self.policy)
        if ptr is None:
            self.save()
            return []
        version = str(ptr["version"])
        if version != self.machine.version:
            kv(log, logging.INFO, "monitoring a new champion", policy=self.policy, version=version,
               previous=self.machine.version or None)  # fmt: skip
            self.machine, self.checked = Machine(version=version), {}
        weights, meta, ref = self._model(version)
        results: list[WindowResult] = []
        for market in sorted(self.markets or self.fold.runs):
            results += self._judge_market(market, version, weights, meta)
        verdicts = []
        for w in sorted(results, key=lambda x: (x.end_ms, x.market)):
            v = self.machine.feed(w, ref, self.cfg)
            verdicts.append(v)
            self.recent.append({"version": version, **v.to_dict()})
            WINDOWS.labels(self.policy, "judged").inc()
            if v.trip:
                self.pending = {"version": version, "reason": v.reason, "window_end_ms": w.end_ms}
        CONSEC.labels(self.policy, "holdout").set(self.machine.consecutive_holdout)
        CONSEC.labels(self.policy, "gap").set(self.machine.consecutive_gap)
        self.last.update(version=version, windows_checked=self.machine.windows_checked, holdout=ref.describe(),
                         consecutive_holdout=self.machine.consecutive_holdout,
                         consecutive_gap=self.machine.consecutive_gap, tripped=self.machine.tripped or None,
                         updated=time.time())  # fmt: skip
        self.save()  # the trip is stored before it is acted on
        if self.pending:
            self._act(self.pending)
            self.save()
        return verdicts

    def _read_records(self) -> None:
        stream = keys.trades_stream(self.trader)
        while True:
            entries = self.r.xrange(stream, min=f"({self.cursor}", max="+", count=READ)
            for eid, fields in entries:
                self.cursor = eid.decode()
                try:
                    rec = msgpack.unpackb(fields.get(keys.PAYLOAD_FIELD, b""), raw=False)
                except Exception as e:  # the archiver parks bad records; here they are only skipped
                    log_once(log, f"badrec:{type(e).__name__}", "undecodable trade record skipped", error=str(e))
                    continue
                if isinstance(rec, dict):
                    self.fold.feed(rec)
            if len(entries) < READ:
                return

    def _model(self, version: str) -> tuple[dict[str, Any], dict[str, Any], HoldoutRef]:
        if version not in self._models:
            weights, meta = artefact.load_model(self.store, self.policy, version)
            self._models = {version: (weights, meta, HoldoutRef.from_meta(meta))}  # only the champion's
        return self._models[version]

    def _judge_market(self, market: str, version: str, weights: Any, meta: dict[str, Any]) -> list[WindowResult]:
        from archiver_svc.rawcols import TRAIN_FIELDS
        from archiver_svc.reader import load_market
        from trainer_svc.backtest import replay_windows
        from trainer_svc.windows import segment

        start_from = self.checked.get(market) or self.fold.first_tick(market, version)
        if start_from is None:
            return []
        start_from = int(start_from)
        md = load_market(self.store, market, start_from, start_from + SPAN_MS, labels=False, raw_fields=TRAIN_FIELDS)
        w = segment(md.states)
        ready: list[tuple[int, int, int, Any]] = []
        last_end = None
        for k in range(len(w)):
            start_ms, end_ms = round(float(w.start_s[k]) * 1000), round(float(w.end_s[k]) * 1000)
            if start_ms < start_from:
                continue
            if not math.isfinite(float(w.settle[k])):
                break  # not settled in the archive yet: judged in a later cycle, in order
            lw = self.fold.window(market, start_ms, end_ms)
            why = None
            if not lw.closed:
                if self.fold.newest.get(market, -1) < end_ms + 2 * (end_ms - start_ms):
                    break  # the trader has not settled it yet
                why = "position not settled by the trader"
            elif lw.models != (version,):
                why = f"decided by {', '.join(m or 'no model' for m in lw.models) or 'nobody'}"
            elif lw.coverage < self.min_coverage:
                why = f"trader decided over {lw.coverage:.0%} of the window"
            if why is not None:
                self.recent.append({"version": version, "skipped": why, "market": market, "start_ms": start_ms,
                                    "end_ms": end_ms})  # fmt: skip
                WINDOWS.labels(self.policy, "skipped").inc()
            else:
                ready.append((k, start_ms, end_ms, lw))
            last_end = end_ms
        out = []
        if ready:
            bt = replay_windows(weights, meta, md.states, w, [x[0] for x in ready])
            stake = float((meta.get("hyper_parameters") or {}).get("stake", 1.0))
            for (_, s, e, lw), b in zip(ready, bt.tolist(), strict=True):
                live = lw.pnl_usd * stake / lw.want_usd if lw.want_usd > 0 else 0.0
                out.append(WindowResult(market, s, e, live, float(b), lw.opens))
        gap = last_end is None and not (w.start_s * 1000 >= start_from).any()  # no window starts in a whole span
        if gap and self.fold.newest.get(market, -1) > start_from + SPAN_MS:
            last_end = start_from + SPAN_MS  # a data gap longer than the span: move on
        if last_end is not None:
            self.checked[market] = last_end
            self.fold.forget(market, last_end)
        return out

    # ------------------------------------------------------------------ acting
    def _act(self, p: dict[str, Any]) -> None:
        version, reason = str(p["version"]), str(p["reason"])
        self.pending = None
        text = f"{self.policy} {version} (trader {self.trader}): {reason}"
        action = "alerted"
        if self.rollback_on:
            ptr = artefact.champion(self.store, self.policy)
            if ptr is None or ptr["version"] != version:
                action = "not rolled back: the champion changed meanwhile"
            else:
                try:
                    new = artefact.rollback(self.store, self.policy, self.r, reason=f"monitor: {reason}")
                    action = f"rolled back to {new['version']}"
                except artefact.ModelError as e:
                    action = f"rollback refused: {e}"
        TRIPS.labels(self.policy, action.split(" ")[0]).inc()
        kv(log, logging.WARNING, "monitor tripped", policy=self.policy, version=version, action=action, reason=reason)
        notify("monitor-tripped", f"{text}; {action}", key=f"{self.policy}/{version}", policy=self.policy,
               version=version, trader=self.trader, action=action)  # fmt: skip
        self.last["action"] = {"version": version, "reason": reason, "action": action, "ts": time.time()}

    def run(self, stop: threading.Event, every_s: float = 10.0) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as e:  # store / Redis down, a bad version: logged once per kind, retried
                log_once(log, f"cycle:{type(e).__name__}", "monitor cycle failed; retrying", error=str(e)[:300])
            stop.wait(every_s)


def from_settings(r: Any, store: Any, policy: str, trader: str, s: Any = None, *, rollback: bool | None = None,
                  markets: list[str] | None = None) -> MonitorService:  # fmt: skip
    """A :class:`MonitorService` with the rules of the settings (``FUSION_MONITOR_*``); ``rollback`` None: the
    setting's."""
    if s is None:
        from common.settings import get_settings

        s = get_settings()
    cfg = MonitorConfig(k=s.monitor_k, windows=s.monitor_windows, alpha=s.monitor_alpha, gap_bound=s.monitor_gap_bound)
    return MonitorService(r, store, policy, trader, cfg, s.monitor_rollback if rollback is None else rollback,
                          s.monitor_min_coverage, markets)  # fmt: skip


def comparison(r: Any, policy: str, trader: str) -> dict[str, Any]:
    """The live-vs-backtest comparison of ``policy`` through ``trader`` as the monitor last stored it (JSON-able):
    the serving version, its hold-out reference, the judged windows (live, backtest, gap, rolling mean, bound),
    totals, the consecutive breaches and the last action. ``{}`` before the monitor ran."""
    h = r.hgetall(keys.monitor_state_key(policy, trader))
    if b"d" not in h:
        return {}
    st = msgpack.unpackb(h[b"d"], raw=False)
    last = st.get("last") or {}
    judged = [x for x in st.get("recent") or [] if "window" in x and x.get("version") == last.get("version")]
    rows = [{"market": x["window"]["market"], "start_ms": x["window"]["start_ms"], "end_ms": x["window"]["end_ms"],
             "live": x["window"]["live"], "backtest": x["window"]["backtest"], "trades": x["window"]["trades"],
             "live_mean": x["live_mean"], "bound": x["bound"], "gap_mean": x["gap_mean"]} for x in judged]  # fmt: skip
    live = sum(x["live"] for x in rows)
    back = sum(x["backtest"] for x in rows if x["backtest"] is not None)
    return {"policy": policy, "trader": trader, "version": last.get("version"), "holdout": last.get("holdout"),
            "windows": rows, "live_total": round(live, 9), "backtest_total": round(back, 9),
            "gap_per_window": round((live - back) / len(rows), 9) if rows else None,
            "consecutive_holdout": last.get("consecutive_holdout"), "consecutive_gap": last.get("consecutive_gap"),
            "tripped": last.get("tripped"), "action": last.get("action"),
            "skipped": [x for x in st.get("recent") or [] if "skipped" in x][-20:]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``fusion monitor [--policy P] [--trader T] [--market M ...] [--once] [--rollback | --no-rollback]``."""
    from common.log import setup_logging
    from common.metrics import serve_metrics
    from common.names import name_arg
    from common.settings import get_settings
    from common.store import open_store
    from common.streams import connect

    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion monitor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", type=name_arg("policy"), help="policy to watch (default: FUSION_POLICY)")
    ap.add_argument(
        "--trader", type=name_arg("trader"), help="trader whose records to read (default: FUSION_TRADER_ID)"
    )
    ap.add_argument("--market", action="append", dest="markets", type=name_arg("market"),
                    help="market to judge (repeat; default: every market the trader decided on)")  # fmt: skip
    ap.add_argument("--once", action="store_true", help="one cycle, print its verdicts as JSON, exit")
    ap.add_argument("--rollback", action=argparse.BooleanOptionalAction, default=None,
                    help="roll back on a trip (default: FUSION_MONITOR_ROLLBACK)")  # fmt: skip
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(s.log_level, s.log_json)
    serve_metrics(s.metrics_port)
    store = open_store(s.store_url, s.s3_endpoint_url, s.s3_region)
    mon = from_settings(connect(s.redis_url), store, a.policy or s.policy, a.trader or s.trader_id, s,
                        rollback=a.rollback, markets=a.markets)  # fmt: skip
    cfg = mon.cfg
    if a.once:
        print(json.dumps([v.to_dict() for v in mon.step()], default=str))
        return 0
    from common.lifecycle import service_started

    service_started("monitor", f"{mon.policy}-{mon.trader}", s.redis_url)  # restart loops are alerted
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kv(log, logging.INFO, "monitor started", policy=mon.policy, trader=mon.trader, rollback=mon.rollback_on, k=cfg.k)
    mon.run(stop, s.monitor_every_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
