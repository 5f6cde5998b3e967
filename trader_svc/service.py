"""The trader's IO: newest states from Redis -> features -> PyTorch policy -> paper engine -> fusion:{T}:trades;
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
  ``fusion:{T}:trades``; status JSON at ``trader_status_key(trader)`` every ``status_every_s``; a metrics
  JSON file ``live-metrics/{trader}/{YYYY-MM-DD}/{ts}.json`` every ``metrics_every_s`` and at stop.
* A bad state entry is parked in the dead-letter stream with its reason (logged once), never fatal.
* **memory** (:mod:`trader_svc.recovery`): positions, cash, PnL, the day's loss and the kill switch are written
  with every batch of records, in the same MULTI; a restart continues from them (or from ``fusion:{T}:trades``),
  first settling the positions whose window ended while it was down.
* **faults**: Redis unreachable -> the trader waits with backoff (logged once per outage, counted), keeps its
  state in memory and writes what is pending when Redis is back; a stream whose top moves below the
  trader's cursor is read again from its real top; an unreadable ``champion.json`` is reported (log once,
  ``champion_error`` in the status, ``fusion_trader_champion_unreadable``) while the trader serves the model it
  has (or holds) and keeps watching events and the pointer.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from common import keys
from common.alerts import notify
from common.deadletter import DeadLetters
from common.features import FEATURE_SET, N_MARKET_FEATURES, agent_features, market_features, observation
from common.log import kv, log_once
from common.metrics import counter, histogram
from common.schema import State, tick_of_entry_id
from common.store import ObjectStore
from common.streams import connect
from common.validate import decode_entry
from trader_svc.models import LoadedModel
from trader_svc.paper import ACTION_NAME, SIDE_NAME, PaperConfig, PaperEngine
from trader_svc.recovery import Ledger, SettleScan, cursors_above_top, settle_from_streams
from trader_svc.status import StatusReport
from trader_svc.swap import ModelSwap

log = logging.getLogger("trader")
DECISIONS = counter("fusion_trader_decisions_total", "decisions taken", ("trader",))
MISSED = counter("fusion_trader_missed_ticks_total", "state ticks never decided on", ("trader",))
FEAT_MISMATCH = counter("fusion_trader_feature_mismatch_total", "state features != recomputed", ("trader",))
FILLS = counter("fusion_trader_fills_total", "paper fills (opens, closes, settlements)", ("trader",))
DEAD = counter("fusion_trader_deadletter_total", "bad state entries parked", ("trader",))
OUTAGES = counter("fusion_trader_redis_outages_total", "times Redis became unreachable", ("trader",))
CURSOR_RESETS = counter("fusion_trader_cursor_resets_total", "stream tops found below the read cursor", ("trader",))
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
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
    trades_max_age_s: int = 7 * 86_400  # the trade stream's age bound (never below what is not archived)
    trim_every_s: float = 60.0
    status_every_s: float = 1.0
    metrics_every_s: float = 60.0
    swap_max_wait_s: float = 1.0
    cursor_check_s: float = 1.0  # how often the streams' tops are compared with the read cursors
    settle_check_s: float = 2.0  # how often ended positions are looked up in the recorded states
    settle_grace_s: float = 900.0  # ... once their window ended this long ago (before: the tick path settles)
    champion_retry_s: float = 1.0  # how often an unreadable champion.json is read again
    max_model_bytes: int = 64 << 20
    model_max_age_h: float = 0.0  # a model created longer ago is refused as stale (0: off)


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
    cursor_resets: int = 0
    redis_outages: int = 0


class Trader(ModelSwap, StatusReport):
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
        self.ledger = Ledger(self.r, cfg.trader_id, cfg.trades_max_age_s)
        self.state_source = "new"
        self._scan = SettleScan()
        self._next_check = {"cursor": 0.0, "settle": 0.0, "trim": 0.0}
        self.champion_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """State (restored, ended positions settled), stream positions, champion, then the listener and
        housekeeping threads. Waits for Redis while it is unreachable."""
        events_from = self._redis_retry(self._recover)
        self._load_champion(at_start=True)
        kv(log, logging.INFO, "trader started", trader=self.lab, policy=self.cfg.policy,
           model=self.model.version if self.model else None, markets=",".join(self.cfg.markets))  # fmt: skip
        for name, fn, arg in (("listener", self._listen, events_from), ("housekeeping", self._housekeep, None)):
            t = threading.Thread(target=fn, args=(arg,) if arg is not None else (), name=f"trader-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        gc.freeze()  # long-lived objects (torch, modules) out of the collector's scans: fewer tick-path pauses
        self.ready.set()

    def _recover(self) -> bytes:
        ev = self.r.xrevrange(keys.EVENTS_STREAM, count=1)
        events_from: bytes = ev[0][0] if ev else b"0-0"  # taken *before* the champion: no update falls between
        pipe = self.r.pipeline(transaction=False)
        for s in self._streams:
            pipe.xrevrange(s, count=1)
        for s, top in zip(self._streams, pipe.execute(), strict=True):
            self._last_ids[s] = top[0][0] if top else b"0-0"
        with self._lock:
            if self.ledger.seq == 0 and not self.ledger.dirty:
                self.state_source = self.ledger.load(self.engine)
            recs = settle_from_streams(self.r, self.engine, self._scan, budget=10**9, store=self.store)
        self.ledger.commit(self.engine, recs)  # the key exists from now on (a rebuilt state is stored)
        kv(log, logging.INFO, "trader state", trader=self.lab, source=self.state_source, seq=self.ledger.seq,
           positions=len(self.engine.pos), settled=len(recs), killed=self.engine.killed)  # fmt: skip
        return events_from

    def _redis_retry(self, fn: Any) -> Any:
        """``fn()`` once Redis answers: backoff 0.2 s -> 5 s, one log line per outage (and one when back)."""
        backoff, down_since = 0.2, None
        while True:
            try:
                out = fn()
            except REDIS_ERRORS as e:
                if self._stop.is_set():
                    raise
                if down_since is None:
                    down_since = time.monotonic()
                    self.stats.redis_outages += 1
                    OUTAGES.labels(self.lab).inc()
                    kv(log, logging.WARNING, "redis unavailable; waiting", trader=self.lab, error=str(e))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if down_since is not None:
                kv(log, logging.INFO, "redis back", trader=self.lab, outage_s=round(time.monotonic() - down_since, 1),
                   pending=len(self.ledger.pending))  # fmt: skip
            return out

    def _poll_safe(self) -> int:
        if self.ledger.dirty:
            self.ledger.flush(self.engine)  # what was decided during an outage, before anything new
        return self.poll_once()

    def run(self, duration_s: float | None = None) -> int:
        self.start()
        deadline = time.monotonic() + duration_s if duration_s else None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self._redis_retry(self._poll_safe)
                except REDIS_ERRORS:
                    break  # stopping while Redis is down: the state is in Redis up to the last commit
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
        self._periodic()
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

    def _periodic(self) -> None:
        """Cursor check and settlement lookup, each every few seconds (cheap: one pipelined XINFO per stream)."""
        now = time.monotonic()
        if now >= self._next_check["cursor"]:
            self._next_check["cursor"] = now + self.cfg.cursor_check_s
            for stream, top in cursors_above_top(self.r, self._last_ids).items():
                market = self._streams[stream]
                log_once(log, f"cursor:{stream}:{self._last_ids[stream]!r}", "stream top below the trader's cursor; "
                         "resuming from the top", market=market, cursor=self._last_ids[stream].decode(),
                         top=top.decode())  # fmt: skip
                self._last_ids[stream] = top
                self.stats.cursor_resets += 1
                CURSOR_RESETS.labels(self.lab).inc()
                tick = tick_of_entry_id(top)
                if self.stats.last_tick.get(market, -1) > tick:
                    self.stats.last_tick[market] = tick
                self._max_tick = max(self.stats.last_tick.values(), default=-1)
        if now >= self._next_check["trim"]:
            self._next_check["trim"] = now + self.cfg.trim_every_s
            self.ledger.trim(int(time.time() * 1000))
        if self.engine.pos and now >= self._next_check["settle"]:
            self._next_check["settle"] = now + self.cfg.settle_check_s
            with self._lock:
                recs = settle_from_streams(
                    self.r, self.engine, self._scan, grace_ms=int(self.cfg.settle_grace_s * 1000), store=self.store
                )
            if recs:
                self._xadd_trades(recs)
                self._m_fills.inc(len(recs))

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
            flags = np.fromiter((s.flags for s in batch), dtype=np.int64, count=len(batch))
            mf = market_features(raw, ticks, flags, tick_s=self.cfg.tick_ms / 1000.0)
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
        """Records + the engine's state, one MULTI (:meth:`trader_svc.recovery.Ledger.commit`)."""
        if recs:
            self.ledger.commit(self.engine, recs)
            for rec in recs:
                if rec["type"] == "kill":
                    notify("kill-switch", f"trader {self.lab} stopped opening for the day: day PnL "
                           f"{rec.get('day_pnl', 0.0):.2f} USD", key=f"{self.lab}/{rec.get('day')}", trader=self.lab,
                           day=rec.get("day"), day_pnl_usd=rec.get("day_pnl"))  # fmt: skip
