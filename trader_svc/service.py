"""The trader's IO: newest states from Redis -> features -> PyTorch policy -> paper engine -> fusion:trades;
a listener thread that hot-swaps models on ``model-updated``; a housekeeping thread for status/metrics.

Guarantees:

* **latest, not the backlog**: per market it XREADs from the last entry it saw and decides only on the
  newest state; every entry it skipped is a *missed tick* (counted per market, exact unless one read
  hit ``read_count``, then estimated from the tick grid). It starts at the streams' current ends.
* **one feature function**: market features are recomputed from each state's raw fields with
  :func:`common.features.market_features`, compared with the state's own ``features`` when the
  feature set matches (differences are counted), then joined with the position features.
* **hot swap off the tick path**: the listener thread downloads, verifies and builds a new model
  (:func:`trader_svc.models.load_version`) while ticks go on; the tick loop adopts it by swapping
  one reference *between ticks* (at the first batch whose ticks are all newer than every tick
  already decided, or after ``swap_max_wait_s``), so all decisions of one tick name the same model
  and versions change in event order. A rejected model leaves the current one in place and an
  XADD ``{type: model-rejected, policy, version, reason, trader, ts}`` to ``fusion:events`` says why.
* **output**: every decision, fill, refusal and swap is XADDed (msgpack under ``d``, MAXLEN ~) to
  ``fusion:trades``; status JSON at ``trader_status_key(trader)`` every ``status_every_s``; a metrics
  JSON file ``live-metrics/{trader}/{YYYY-MM-DD}/{ts}.json`` every ``metrics_every_s`` and at stop.
* A bad state entry is parked in the dead-letter stream with its reason (logged once), never fatal.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from common import keys
from common.deadletter import DeadLetters
from common.features import FEATURE_SET, N_MARKET_FEATURES, agent_features, market_features, observation
from common.log import kv, log_once
from common.metrics import counter, gauge, histogram
from common.schema import State, tick_of_entry_id
from common.store import ObjectStore
from common.streams import connect
from common.validate import decode_entry
from trader_svc.models import LoadedModel, ModelRejected, load_champion, load_version
from trader_svc.paper import ACTION_NAME, SIDE_NAME, PaperConfig, PaperEngine

log = logging.getLogger("trader")
EVENT_VERSION = 1
DECISIONS = counter("fusion_trader_decisions_total", "decisions taken", ("trader",))
MISSED = counter("fusion_trader_missed_ticks_total", "state ticks never decided on", ("trader",))
SWAPS = counter("fusion_trader_swaps_total", "models swapped in", ("trader",))
REJECTED = counter("fusion_trader_models_rejected_total", "models refused", ("trader",))
FEAT_MISMATCH = counter("fusion_trader_feature_mismatch_total", "state features != recomputed", ("trader",))
FILLS = counter("fusion_trader_fills_total", "paper fills (opens, closes, settlements)", ("trader",))
DEAD = counter("fusion_trader_deadletter_total", "bad state entries parked", ("trader",))
EQUITY = gauge("fusion_trader_equity_usd", "realised + unrealised PnL", ("trader",))
KILLED = gauge("fusion_trader_kill_switch", "1 when the daily-loss kill switch is on", ("trader",))
TICK_S = histogram("fusion_trader_tick_seconds", "read-to-recorded time of one batch", ("trader",),
                   buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25))  # fmt: skip


@dataclass(slots=True)
class TraderConfig:
    trader_id: str
    policy: str
    markets: list[str]
    paper: PaperConfig = field(default_factory=PaperConfig)
    tick_ms: int = 500  # the states' grid (only to estimate misses beyond one read)
    block_ms: int = 100
    read_count: int = 256
    trades_maxlen: int = 200_000
    status_every_s: float = 1.0
    metrics_every_s: float = 60.0
    swap_max_wait_s: float = 1.0


@dataclass(slots=True)
class Stats:
    ticks: int = 0  # batches
    decisions: int = 0
    missed: dict[str, int] = field(default_factory=dict)
    last_tick: dict[str, int] = field(default_factory=dict)
    feature_mismatches: int = 0
    dead: int = 0
    swaps: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)  # timings of verified loads
    tick_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=10_000))


class Trader:
    """One paper trader process: call :meth:`run` (blocking) and :meth:`stop` from anywhere."""

    def __init__(self, cfg: TraderConfig, redis_url: str, store: ObjectStore) -> None:
        self.cfg, self.redis_url, self.store = cfg, redis_url, store
        self.r: Any = connect(redis_url)  # redis-py's stubs type replies as unions; they are bytes here
        self.engine = PaperEngine(cfg.paper, cfg.markets)
        self.stats = Stats(missed={m: 0 for m in cfg.markets})
        self.model: LoadedModel | None = None
        self._incoming: collections.deque[LoadedModel] = collections.deque()
        self._incoming_since = 0.0
        self._max_tick = -1
        self._lock = threading.Lock()  # engine + stats, between the tick loop and housekeeping
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once start() positioned the streams and loaded the champion
        self._threads: list[threading.Thread] = []
        self._streams = {keys.states_stream(m): m for m in cfg.markets}
        self._last_ids: dict[str, bytes] = {}
        self.started = time.time()
        self.lab = cfg.trader_id
        self._m_decisions, self._m_fills = DECISIONS.labels(self.lab), FILLS.labels(self.lab)
        self._m_tick = TICK_S.labels(self.lab)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Stream positions, champion, then the listener and housekeeping threads."""
        ev = self.r.xrevrange(keys.EVENTS_STREAM, count=1)
        events_from = ev[0][0] if ev else b"0-0"  # taken *before* the champion: no update falls between
        pipe = self.r.pipeline(transaction=False)
        for s in self._streams:
            pipe.xrevrange(s, count=1)
        for s, top in zip(self._streams, pipe.execute(), strict=True):
            self._last_ids[s] = top[0][0] if top else b"0-0"
        try:
            self.model = load_champion(self.store, self.cfg.policy)
        except ModelRejected as e:
            self._rejected(str(self.cfg.policy), "champion", e.reason)
        kv(log, logging.INFO, "trader started", trader=self.lab, policy=self.cfg.policy,
           model=self.model.version if self.model else None, markets=",".join(self.cfg.markets))  # fmt: skip
        for name, fn, arg in (("listener", self._listen, events_from), ("housekeeping", self._housekeep, None)):
            t = threading.Thread(target=fn, args=(arg,) if arg is not None else (), name=f"trader-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        gc.freeze()  # long-lived objects (torch, modules) out of the collector's scans: fewer tick-path pauses
        self.ready.set()

    def run(self, duration_s: float | None = None) -> int:
        self.start()
        deadline = time.monotonic() + duration_s if duration_s else None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self.poll_once()
        finally:
            self.stop()
            for t in self._threads:
                t.join(timeout=5)
            self._publish_status(final=True)
            self._write_metrics()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop and join the threads of a trader driven by :meth:`start` / :meth:`poll_once`."""
        self.stop()
        for t in self._threads:
            t.join(timeout=5)
        self.r.close()

    # ------------------------------------------------------------------ tick loop
    def poll_once(self) -> int:
        """One blocking XREAD (up to ``block_ms``), one non-blocking XREAD to collect the rest of the
        same publish (Redis wakes a reader after the first XADD of a pipeline), one decision batch on
        the newest state per market. Returns the number of states decided."""
        resp = self.r.xread(self._last_ids, count=self.cfg.read_count, block=self.cfg.block_ms)
        if not resp:
            if self._incoming:  # idle: a tick boundary by definition
                self._adopt(None)
            return 0
        t_read = time.perf_counter()
        got: dict[str, list[Any]] = {}
        for rnd in (resp, None):
            if rnd is None:
                rnd = self.r.xread(self._last_ids, count=self.cfg.read_count)
            for stream_b, entries in rnd or []:
                stream = stream_b.decode()
                got.setdefault(stream, []).extend(entries)
                self._last_ids[stream] = entries[-1][0]
        batch: list[State] = []
        for stream, entries in got.items():
            market = self._streams[stream]
            self._count_missed(market, len(entries) - 1)
            if len(entries) >= self.cfg.read_count:  # backlog longer than one read: jump to the newest
                batch += self._jump(stream)
                continue
            state = self._decode(market, entries[-1])
            if state is not None:
                batch.append(state)
        if batch:
            self._decide(batch, t_read)
        return len(batch)

    def _decode(self, market: str, entry: tuple[bytes, dict[bytes, bytes]]) -> State | None:
        """The entry's state when :func:`common.validate.decode_entry` accepts it (the archiver's and the
        labeler's rules); else None, and the entry is parked once across services (DeadLetters)."""
        eid, fields = entry
        payload = fields.get(keys.PAYLOAD_FIELD, b"")
        s, reason = decode_entry(market, eid, payload)
        if s is not None:
            return s
        why = reason or "unusable state"
        log_once(log, f"dead:{market}:{why[:60]}", "bad state entry parked", market=market, reason=why)
        body = payload if isinstance(payload, bytes) else b""
        DeadLetters(self.r, "trader").park(keys.states_stream(market), eid, why, body)  # once across services
        self.stats.dead += 1
        DEAD.labels(self.lab).inc()
        return None

    def _count_missed(self, market: str, n: int) -> None:
        if n > 0 and market in self.stats.last_tick:  # before the first decision nothing is "missed"
            self.stats.missed[market] += n
            MISSED.labels(self.lab).inc(n)

    def _jump(self, stream: str) -> list[State]:
        market = self._streams[stream]
        top = self.r.xrevrange(stream, count=1)
        if not top:
            return []
        prev = tick_of_entry_id(self._last_ids[stream])
        self._last_ids[stream] = top[0][0]
        self._count_missed(market, max(0, (tick_of_entry_id(top[0][0]) - prev) // max(1, self.cfg.tick_ms)))
        s = self._decode(market, top[0])
        return [s] if s is not None else []

    def _adopt(self, min_tick: int | None) -> None:
        """Swap in the verified models at a tick boundary: before the batch whose oldest tick is
        ``min_tick`` (None: between reads, idle). Pointer swap, timed; recorded with ``after_tick``, the
        newest tick decided by the old model."""
        if not self._incoming:
            return
        if min_tick is None:  # idle: a boundary once every market has decided the newest tick
            boundary = all(self.stats.last_tick.get(m, self._max_tick) == self._max_tick for m in self.cfg.markets)
        else:
            boundary = min_tick > self._max_tick
        if not boundary and time.monotonic() - self._incoming_since < self.cfg.swap_max_wait_s:
            return
        while self._incoming:
            new = self._incoming.popleft()
            old = self.model
            t0 = time.perf_counter_ns()
            self.model = new
            swap_ns = time.perf_counter_ns() - t0
            rec = {"type": "swap", "from": old.version if old else None, "to": new.version, "tick": min_tick,
                   "after_tick": self._max_tick, "swap_ns": swap_ns, "load_s": new.timings_s.get("total_s", 0.0),
                   "ts": int(time.time() * 1000)}  # fmt: skip
            self.stats.swaps.append(rec)
            SWAPS.labels(self.lab).inc()
            self._xadd_trades([rec])
            kv(log, logging.INFO, "model swapped", trader=self.lab, old=rec["from"], new=new.version, tick=min_tick)

    def _decide(self, batch: list[State], t_read: float) -> None:
        ticks = np.fromiter((s.tick_ms for s in batch), dtype=np.int64, count=len(batch))
        self._adopt(int(ticks.min()))
        model = self.model  # one reference for the whole tick
        version = model.version if model is not None else ""
        markets = [s.market for s in batch]
        raw = np.stack([s.raw for s in batch])
        recs: list[dict[str, Any]] = []
        with self._lock:
            for s in batch:
                recs += self.engine.on_state(s.market, s.tick_ms, s.raw, s.flags)
            mf = market_features(raw, ticks)
            self._check_features(batch, mf)
            has, side, frac = self.engine.agent_features(markets)
            obs = observation(mf, agent_features(has, side, frac))
            actions = model.net.act(obs) if model is not None else np.zeros(len(batch), np.int64)
            decided_ns = time.time_ns()
            for i, s in enumerate(batch):
                a = int(actions[i])
                recs.append({"type": "decision", "market": s.market, "tick": s.tick_ms, "a": a,
                             "action": ACTION_NAME[a], "model": version, "side": SIDE_NAME[int(side[i])],
                             "pnl_frac": float(frac[i]), "decided_ns": decided_ns})  # fmt: skip
                recs += self.engine.decide(s.market, s.tick_ms, a, s.raw, s.flags, version)
                self.stats.last_tick[s.market] = max(s.tick_ms, self.stats.last_tick.get(s.market, -1))
            self.stats.ticks += 1
            self.stats.decisions += len(batch)
        self._max_tick = max(self._max_tick, int(ticks.max()))
        self._xadd_trades(recs)
        n_fills = sum(1 for r in recs if r["type"] == "fill")
        self._m_decisions.inc(len(batch))
        if n_fills:
            self._m_fills.inc(n_fills)
        dt = time.perf_counter() - t_read
        with self._lock:
            self.stats.tick_s.append(dt)
        self._m_tick.observe(dt)

    def _check_features(self, batch: list[State], mf: np.ndarray) -> None:
        """Count states whose own features (same feature set) differ from the recomputed ones (vectorised)."""
        idx = [i for i, s in enumerate(batch) if s.feature_set == FEATURE_SET]
        if not idx:
            return
        ok_w = [i for i in idx if batch[i].features.shape == (N_MARKET_FEATURES,)]
        bad = [i for i in idx if batch[i].features.shape != (N_MARKET_FEATURES,)]
        if ok_w:
            own = np.stack([batch[i].features for i in ok_w])
            diff = ~(np.abs(own - mf[ok_w]) <= 1e-6).all(axis=1)
            bad += [ok_w[k] for k in np.flatnonzero(diff)]
        for i in bad:
            log_once(log, f"featmismatch:{batch[i].market}", "state features differ from recomputed ones",
                     market=batch[i].market, tick=batch[i].tick_ms)  # fmt: skip
        if bad:
            self.stats.feature_mismatches += len(bad)
            FEAT_MISMATCH.labels(self.lab).inc(len(bad))

    def _xadd_trades(self, recs: list[dict[str, Any]]) -> None:
        if not recs:
            return
        pipe = self.r.pipeline(transaction=False)
        for rec in recs:
            rec["v"], rec["trader"] = EVENT_VERSION, self.lab
            payload = msgpack.packb(rec, use_bin_type=True)
            pipe.xadd(
                keys.TRADES_STREAM, {keys.PAYLOAD_FIELD: payload}, maxlen=self.cfg.trades_maxlen, approximate=True
            )
        pipe.execute()

    # ------------------------------------------------------------------ hot swap (listener thread)
    def _listen(self, last_id: bytes) -> None:
        r: Any = connect(self.redis_url)
        while not self._stop.is_set():
            try:
                resp = r.xread({keys.EVENTS_STREAM: last_id}, count=100, block=250)
            except Exception as e:  # redis down: keep trying, the tick loop reports the outage
                log_once(log, f"events:{type(e).__name__}", "events read failed", error=str(e))
                self._stop.wait(0.5)
                continue
            for _stream, entries in resp or []:
                for eid, fields in entries:
                    last_id = eid
                    self._on_event(fields.get(keys.PAYLOAD_FIELD, b""))
        r.close()

    def _on_event(self, payload: bytes) -> None:
        try:
            msg = msgpack.unpackb(payload, raw=False)
            if not isinstance(msg, dict):
                raise ValueError("event is not a map")
        except Exception as e:
            log_once(log, f"badevent:{type(e).__name__}", "undecodable event ignored", error=str(e))
            return
        if msg.get("type") != "model-updated" or msg.get("policy") != self.cfg.policy:
            return
        version = str(msg.get("version", ""))
        known = [m.version for m in self._incoming] + ([self.model.version] if self.model else [])
        if version in known:
            return  # already serving / queued (e.g. the champion we started from)
        try:
            new = load_version(self.store, self.cfg.policy, version, msg.get("sha256"), msg.get("uri"))
        except ModelRejected as e:
            self._rejected(version, "model-updated", e.reason)
            return
        except Exception as e:  # store unreachable etc.: same outcome, the old model stays
            self._rejected(version, "model-updated", f"error: {type(e).__name__}: {e}")
            return
        self.stats.loads.append({"version": version, **new.timings_s})
        if not self._incoming:
            self._incoming_since = time.monotonic()
        self._incoming.append(new)  # adopted by the tick loop at the next tick boundary

    def _rejected(self, version: str, source: str, reason: str) -> None:
        msg = {"v": EVENT_VERSION, "type": "model-rejected", "policy": self.cfg.policy, "version": version,
               "reason": reason, "trader": self.lab, "source": source, "ts": int(time.time() * 1000)}  # fmt: skip
        self.stats.rejected.append(msg)
        REJECTED.labels(self.lab).inc()
        kv(log, logging.WARNING, "model rejected", trader=self.lab, version=version, reason=reason)
        try:
            self.r.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(msg, use_bin_type=True)})
        except Exception as e:
            log_once(log, "rejectevent", "could not publish model-rejected", error=str(e))

    # ------------------------------------------------------------------ status and metrics
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
        next_metrics = time.monotonic() + self.cfg.metrics_every_s
        while not self._stop.wait(self.cfg.status_every_s):
            self._publish_status()
            if time.monotonic() >= next_metrics:
                self._write_metrics()
                next_metrics = time.monotonic() + self.cfg.metrics_every_s
