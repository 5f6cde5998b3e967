"""Hot swap for :class:`trader_svc.service.Trader` (a mixin: the attributes it uses are the trader's).

Guarantees: ``model-updated`` and ``model-rolled-back`` (:mod:`common.events`: both name the champion to serve)
are handled alike: the listener thread downloads, verifies and builds the new model off the tick path; the tick
loop adopts it between ticks (:meth:`ModelSwap._adopt`; the ``swap`` record names the event, and a rollback's
reason); a rejected model leaves the current one in place and an XADD ``{type: model-rejected, ...}`` to
``fusion:events`` says why. A model older than ``model_max_age_h`` or trained on another state schema or feature
set is refused as ``stale`` (counted in ``fusion_trader_models_stale_total`` too, alerted). An event whose version
is outside the name grammar is refused and parked; an unreadable ``champion.json`` is reported once (log,
``champion_error``, gauge) and read again until it is readable.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from common import keys
from common.alerts import notify
from common.deadletter import DeadLetters
from common.events import CHAMPION_EVENTS, MAX_REASON, MODEL_ROLLED_BACK
from common.log import kv, log_once
from common.metrics import counter, gauge
from common.names import InvalidName, is_valid_name
from common.store import ObjectStore
from common.streams import connect
from trader_svc.models import LoadedModel, ModelRejected, load_champion, load_version

log = logging.getLogger("trader")
EVENT_VERSION = 1
SWAPS = counter("fusion_trader_swaps_total", "models swapped in", ("trader",))
REJECTED = counter("fusion_trader_models_rejected_total", "models refused", ("trader",))
STALE = counter("fusion_trader_models_stale_total", "models refused as stale", ("trader",))
CHAMPION_BAD = gauge("fusion_trader_champion_unreadable", "1 while champion.json cannot be read", ("trader",))


class ModelSwap:
    """Model loading, adoption at tick boundaries and the ``model-updated`` listener."""

    cfg: Any
    stats: Any
    lab: str
    r: Any
    redis_url: str
    store: ObjectStore
    model: LoadedModel | None
    champion_error: str | None
    _incoming: collections.deque[LoadedModel]
    _incoming_since: float
    _max_tick: int
    _stop: threading.Event
    _xadd_trades: Callable[[list[dict[str, Any]]], None]  # trader_svc.service.Trader provides it

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
                   "source": new.source, "ts": int(time.time() * 1000)}  # fmt: skip
            self.stats.swaps.append(rec)
            SWAPS.labels(self.lab).inc()
            self._xadd_trades([rec])
            kv(log, logging.INFO, "model swapped", trader=self.lab, old=rec["from"], new=new.version, tick=min_tick)

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
                    self._on_event(fields.get(keys.PAYLOAD_FIELD, b""), eid)
        r.close()

    def _on_event(self, payload: bytes, eid: bytes = b"") -> None:
        try:
            msg = msgpack.unpackb(payload, raw=False)
            if not isinstance(msg, dict):
                raise ValueError("event is not a map")
        except Exception as e:
            log_once(log, f"badevent:{type(e).__name__}", "undecodable event ignored", error=str(e))
            return
        kind = msg.get("type")
        if kind not in CHAMPION_EVENTS or msg.get("policy") != self.cfg.policy:
            return
        if not is_valid_name(msg.get("version")):  # never a store key nor re-broadcast: counted, logged, parked
            reason = f"{kind} refused: {InvalidName('version', msg.get('version'))}"
            log_once(log, "badevent:version", "event refused", reason=reason)
            REJECTED.labels(self.lab).inc()
            try:
                DeadLetters(self.r, "trader").park(keys.EVENTS_STREAM, eid, reason, payload)
            except Exception as e:  # redis down: the event is refused all the same
                log_once(log, f"park:{type(e).__name__}", "could not park a refused event", error=str(e))
            return
        version = str(msg["version"])
        known = [m.version for m in self._incoming] + ([self.model.version] if self.model else [])
        if version in known:
            return  # already serving / queued (e.g. the champion we started from)
        sha, uri = (x if isinstance(x, str) or x is None else "!" for x in (msg.get("sha256"), msg.get("uri")))
        try:
            new = load_version(self.store, self.cfg.policy, version, sha, uri, self.cfg.max_model_bytes,
                               self.cfg.model_max_age_h)  # fmt: skip
        except ModelRejected as e:
            self._rejected(version, str(kind), e.reason)
            return
        except Exception as e:  # store unreachable etc.: same outcome, the old model stays
            self._rejected(version, str(kind), f"error: {type(e).__name__}: {e}")
            return
        new.source = str(kind)
        if kind == MODEL_ROLLED_BACK:
            kv(log, logging.WARNING, "champion rolled back", trader=self.lab, to=version,
               reason=str(msg.get("reason", ""))[:MAX_REASON])  # fmt: skip
        self.stats.loads.append({"version": version, **new.timings_s})
        if not self._incoming:
            self._incoming_since = time.monotonic()
        self._incoming.append(new)  # adopted by the tick loop at the next tick boundary

    def _load_champion(self, at_start: bool = False) -> None:
        """Serve (at start) or queue (later) the champion. An unreadable pointer is reported, not fatal: the
        current model (or none: hold) stays, and housekeeping reads the pointer again every ``champion_retry_s``."""
        try:
            new = load_champion(self.store, self.cfg.policy, self.cfg.max_model_bytes, self.cfg.model_max_age_h)
        except ModelRejected as e:
            if e.kind != "pointer":
                self._rejected(str(self.cfg.policy), "champion", e.reason)
                new = None
            else:
                if self.champion_error is None:
                    kv(log, logging.WARNING, "champion pointer unreadable; keeping the current model",
                       trader=self.lab, policy=self.cfg.policy, error=e.reason,
                       model=self.model.version if self.model else None)  # fmt: skip
                self.champion_error = e.reason
                CHAMPION_BAD.labels(self.lab).set(1.0)
                return
        if self.champion_error is not None:
            kv(log, logging.INFO, "champion pointer readable again", trader=self.lab, policy=self.cfg.policy)
        self.champion_error = None
        CHAMPION_BAD.labels(self.lab).set(0.0)
        known = [m.version for m in self._incoming] + ([self.model.version] if self.model else [])
        if new is None or new.version in known:
            return
        new.source = "start" if at_start else "champion"
        if at_start:
            self.model = new
            return
        if not self._incoming:
            self._incoming_since = time.monotonic()
        self._incoming.append(new)

    def _rejected(self, version: str, source: str, reason: str) -> None:
        msg = {"v": EVENT_VERSION, "type": "model-rejected", "policy": self.cfg.policy, "version": version,
               "reason": reason, "trader": self.lab, "source": source, "ts": int(time.time() * 1000)}  # fmt: skip
        self.stats.rejected.append(msg)
        REJECTED.labels(self.lab).inc()
        if reason.startswith("stale"):
            STALE.labels(self.lab).inc()
        kv(log, logging.WARNING, "model rejected", trader=self.lab, version=version, reason=reason)
        notify("model-rejected", f"trader {self.lab} refused {self.cfg.policy} {version}: {reason}",
               key=f"{self.lab}/{version}", trader=self.lab, policy=self.cfg.policy, version=version)  # fmt: skip
        try:
            self.r.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(msg, use_bin_type=True)})
        except Exception as e:
            log_once(log, "rejectevent", "could not publish model-rejected", error=str(e))
