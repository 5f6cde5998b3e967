"""Local Binance depth book that follows the snapshot + update-id rules. Pure (no IO).

Public API::

    book = DepthBook(futures: bool)
    book.on_update(ev: DepthUpdate) -> bool      # True when applied to a valid book
    book.apply_snapshot(snap: DepthSnapshot) -> bool   # True when the book became valid
    book.valid, book.needs_snapshot, book.last_update_id, book.last_event_ms, book.resyncs
    book.best_bid, book.best_bid_qty, book.best_ask, book.best_ask_qty  (NaN when unknown/invalid)
    book.top() -> (bid, bid_qty, ask, ask_qty)

Rules (Binance docs, spot and USD-M futures): updates are buffered until a REST snapshot is
applied; buffered/arriving events with ``u <= lastUpdateId`` are dropped; the first applied event
must straddle the snapshot (``U <= lastUpdateId+1 <= u``; futures also accept ``pu == lastUpdateId``);
after that each event must continue the chain: ``U == prev u + 1`` (spot) or ``pu == prev u``
(futures). A gap makes the book invalid (``needs_snapshot`` set, ``resyncs`` counted) and events
are buffered again until the next snapshot. A snapshot older than the buffered events is refused
(``needs_snapshot`` stays set); one older than a valid book is ignored. Removing an unknown level is normal and ignored.
"""

from __future__ import annotations

import math
from collections import deque

from observer_svc.binance_wire import DepthSnapshot, DepthUpdate

_NAN = math.nan
_NEG_INF = -math.inf
_INF = math.inf


class DepthBook:
    """Price -> qty maps per side with cached best levels."""

    __slots__ = (
        "futures",
        "bids",
        "asks",
        "valid",
        "needs_snapshot",
        "last_update_id",
        "last_event_ms",
        "resyncs",
        "stale_snapshots",
        "max_levels",
        "_buf",
        "_bb",
        "_ba",
        "_fresh",
    )

    def __init__(self, futures: bool, max_buffer: int = 5000, max_levels: int = 5000) -> None:
        self.futures = futures
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.valid = False
        self.needs_snapshot = True
        self.last_update_id = -1  # u of the last applied event (or the snapshot id)
        self.last_event_ms: int | None = None  # E of the last applied event
        self.resyncs = 0  # gaps detected after a sync
        self.stale_snapshots = 0  # snapshots refused as older than the buffer
        self.max_levels = max_levels
        self._buf: deque[DepthUpdate] = deque(maxlen=max_buffer)
        self._bb = _NEG_INF
        self._ba = _INF
        self._fresh = False  # synced from a snapshot, no event applied yet: the next must straddle it

    # ------------------------------------------------------------------ state changes
    def invalidate(self) -> None:
        """Forget the sync (e.g. after a reconnect): buffer until the next snapshot."""
        self.valid = False
        self.needs_snapshot = True
        self._buf.clear()

    def on_update(self, ev: DepthUpdate) -> bool:
        if not self.valid:
            self._buf.append(ev)
            return False
        last = self.last_update_id
        if ev.final_id <= last:
            return True  # old/duplicate event: the book already contains it
        if self._fresh:
            ok = self._straddles(ev, last)
        elif self.futures and ev.prev_final_id is not None:
            ok = ev.prev_final_id == last
        else:
            ok = ev.first_id == last + 1
        if not ok:
            self.resyncs += 1
            self.valid = False
            self.needs_snapshot = True
            self._buf.clear()
            self._buf.append(ev)
            return False
        self._apply(ev)
        return True

    def apply_snapshot(self, snap: DepthSnapshot) -> bool:
        lid = snap.last_update_id
        if self.valid and lid <= self.last_update_id:
            return True  # the book is already newer than this snapshot
        buf = [e for e in self._buf if e.final_id > lid]
        if buf and not self._straddles(buf[0], lid):
            # the snapshot predates the buffered events (or they have a hole): need a newer one
            self.stale_snapshots += 1
            self.needs_snapshot = True
            return False
        self.bids = {p: q for p, q in snap.bids if q > 0.0}
        self.asks = {p: q for p, q in snap.asks if q > 0.0}
        self._bb = max(self.bids) if self.bids else _NEG_INF
        self._ba = min(self.asks) if self.asks else _INF
        self.last_update_id = lid
        self.valid = True
        self.needs_snapshot = False
        self._buf.clear()
        self._fresh = not buf
        if buf:
            self._apply(buf[0])
            for i in range(1, len(buf)):
                if not self.on_update(buf[i]):
                    # a hole inside the buffer: keep buffering what follows
                    self._buf.extend(buf[i + 1 :])
                    return False
        return True

    def _straddles(self, ev: DepthUpdate, lid: int) -> bool:
        if ev.first_id <= lid + 1 <= ev.final_id:
            return True
        return self.futures and ev.prev_final_id == lid

    def _apply(self, ev: DepthUpdate) -> None:
        bids, asks = self.bids, self.asks
        bb, ba = self._bb, self._ba
        rb = ra = False
        for p, q in ev.bids:
            if q > 0.0:
                bids[p] = q
                if p > bb:
                    bb = p
            elif bids.pop(p, None) is not None and p == bb:
                rb = True
        for p, q in ev.asks:
            if q > 0.0:
                asks[p] = q
                if p < ba:
                    ba = p
            elif asks.pop(p, None) is not None and p == ba:
                ra = True
        if rb:
            bb = max(bids) if bids else _NEG_INF
        if ra:
            ba = min(asks) if asks else _INF
        self._bb, self._ba = bb, ba
        self._fresh = False
        self.last_update_id = ev.final_id
        self.last_event_ms = ev.event_time_ms
        if len(bids) > self.max_levels or len(asks) > self.max_levels:
            self._prune()

    def _prune(self) -> None:
        """Keep the ``max_levels/2`` levels nearest the touch per side (far levels go stale anyway)."""
        keep = self.max_levels // 2
        if len(self.bids) > self.max_levels:
            self.bids = {p: self.bids[p] for p in sorted(self.bids, reverse=True)[:keep]}
        if len(self.asks) > self.max_levels:
            self.asks = {p: self.asks[p] for p in sorted(self.asks)[:keep]}

    # ------------------------------------------------------------------ reads
    @property
    def best_bid(self) -> float:
        return self._bb if self.valid and self.bids else _NAN

    @property
    def best_ask(self) -> float:
        return self._ba if self.valid and self.asks else _NAN

    @property
    def best_bid_qty(self) -> float:
        return self.bids[self._bb] if self.valid and self.bids else _NAN

    @property
    def best_ask_qty(self) -> float:
        return self.asks[self._ba] if self.valid and self.asks else _NAN

    def top(self) -> tuple[float, float, float, float]:
        """(bid, bid_qty, ask, ask_qty); NaN for a missing side or an invalid book."""
        if not self.valid:
            return (_NAN, _NAN, _NAN, _NAN)
        bids, asks = self.bids, self.asks
        b = (self._bb, bids[self._bb]) if bids else (_NAN, _NAN)
        a = (self._ba, asks[self._ba]) if asks else (_NAN, _NAN)
        return (b[0], b[1], a[0], a[1])
