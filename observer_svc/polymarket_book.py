"""Local order book of one Polymarket token (pure logic, no IO).

Public API
----------
``TokenBook(asset_id)``
    ``apply_book(book: wire.Book)``          snapshot: replaces both sides, clears ``needs_resync``
    ``set_level(side, price, size)``         ``side`` "BUY" (bids) | "SELL" (asks); size 0 removes the level
    ``check_top(best_bid, best_ask, check_venue=True) -> bool``
                                              after a batch of changes: detects a crossed book and
                                              disagreement with the venue's top; True when it had to repair
    ``set_tick_size(tick)``, ``touch(ts_ms)``
    ``best_bid``, ``best_ask`` (None when the side is empty), ``mid()`` (NaN unless both sides exist)
    ``top(n) -> (bid_px, bid_sz, ask_px, ask_sz)``   float64 arrays of length n, best first, NaN padded
    ``fill_top(out, n)``                     writes the four arrays back to back into ``out[:4n]``
    counters ``crossed``, ``disagreed``; flag ``needs_resync``; ``timestamp`` (newest event ms)
``apply_price_change(pc, books) -> list[TokenBook]``
    applies a :class:`wire.PriceChange` to the books it concerns (``books``: asset id -> book; unknown
    assets are skipped) and checks each touched book once against the last venue top given for it.
    Returns the books that were repaired (they need a fresh snapshot).

Guarantees: a ``price_change`` sets the new aggregate size of a level (it is not a delta). When the
book is crossed after a batch, or its top disagrees with the ``best_bid``/``best_ask`` the venue sent
with the change, the venue's top is trusted: levels better than the venue's best are dropped, a
venue best missing locally is inserted with an unknown (NaN) size, and the book is marked
``needs_resync`` until the next snapshot (a crossed book without a venue top is only marked).
A venue best bid <= 0, or best ask <= 0 or >= 1, means an empty side.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from observer_svc.polymarket_wire import Book, PriceChange

F64 = npt.NDArray[np.float64]
_EPS = 1e-9


def _venue_bid(v: float | None) -> float | None:
    return v if v is not None and v > 0.0 else None


def _venue_ask(v: float | None) -> float | None:
    return v if v is not None and 0.0 < v < 1.0 else None


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= _EPS


class TokenBook:
    """Aggregated price levels of one token; see the module docstring for the rules."""

    __slots__ = (
        "asset_id",
        "bids",
        "asks",
        "tick_size",
        "timestamp",
        "hash",
        "needs_resync",
        "crossed",
        "disagreed",
        "_bb",
        "_ba",
        "_bb_dirty",
        "_ba_dirty",
        "_top_cache",
    )

    def __init__(self, asset_id: str) -> None:
        self.asset_id = asset_id
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.tick_size: float | None = None
        self.timestamp: int | None = None
        self.hash = ""
        self.needs_resync = False
        self.crossed = 0
        self.disagreed = 0
        self._bb: float | None = None
        self._ba: float | None = None
        self._bb_dirty = False
        self._ba_dirty = False
        self._top_cache: tuple[int, tuple[F64, F64, F64, F64]] | None = None

    # ---------------------------------------------------------------- updates
    def touch(self, ts_ms: int) -> None:
        if self.timestamp is None or ts_ms > self.timestamp:
            self.timestamp = ts_ms

    def apply_book(self, book: Book) -> None:
        self.bids = {p: s for p, s in book.bids if s > 0.0}
        self.asks = {p: s for p, s in book.asks if s > 0.0}
        self._bb = max(self.bids) if self.bids else None
        self._ba = min(self.asks) if self.asks else None
        self._bb_dirty = self._ba_dirty = False
        self._top_cache = None
        self.hash = book.hash
        if book.tick_size is not None:
            self.tick_size = book.tick_size
        self.needs_resync = False
        self.touch(book.timestamp)

    def set_level(self, side: str, price: float, size: float) -> None:
        self._top_cache = None
        if side == "BUY":
            if size > 0.0:
                self.bids[price] = size
                if not self._bb_dirty and (self._bb is None or price > self._bb):
                    self._bb = price
            elif self.bids.pop(price, None) is not None and self._bb is not None and price >= self._bb:
                self._bb_dirty = True
        else:
            if size > 0.0:
                self.asks[price] = size
                if not self._ba_dirty and (self._ba is None or price < self._ba):
                    self._ba = price
            elif self.asks.pop(price, None) is not None and self._ba is not None and price <= self._ba:
                self._ba_dirty = True

    def set_tick_size(self, tick: float) -> None:
        self.tick_size = tick

    def check_top(self, best_bid: float | None, best_ask: float | None, check_venue: bool = True) -> bool:
        """Repair the book after a batch of changes; True when it was crossed or disagreed with the venue."""
        bb, ba = self.best_bid, self.best_ask
        crossed = bb is not None and ba is not None and bb >= ba
        if crossed:
            self.crossed += 1
        vb, va = _venue_bid(best_bid), _venue_ask(best_ask)
        disagree = check_venue and not (_same(bb, vb) and _same(ba, va))
        if not crossed and not disagree:
            return False
        if disagree:
            self.disagreed += 1
            self._trust(vb, va)
        # crossed without a venue top to trust (old-shape event): leave it, a snapshot will fix it
        self.needs_resync = True
        return True

    def _trust(self, vb: float | None, va: float | None) -> None:
        self._top_cache = None
        if vb is None:
            self.bids.clear()
        else:
            for p in [p for p in self.bids if p > vb + _EPS]:
                del self.bids[p]
            if vb not in self.bids:
                self.bids[vb] = math.nan
        if va is None:
            self.asks.clear()
        else:
            for p in [p for p in self.asks if p < va - _EPS]:
                del self.asks[p]
            if va not in self.asks:
                self.asks[va] = math.nan
        self._bb, self._ba = vb, va
        self._bb_dirty = self._ba_dirty = False

    # ---------------------------------------------------------------- reads
    @property
    def best_bid(self) -> float | None:
        if self._bb_dirty:
            self._bb = max(self.bids) if self.bids else None
            self._bb_dirty = False
        return self._bb

    @property
    def best_ask(self) -> float | None:
        if self._ba_dirty:
            self._ba = min(self.asks) if self.asks else None
            self._ba_dirty = False
        return self._ba

    @property
    def empty(self) -> bool:
        return not self.bids and not self.asks

    def mid(self) -> float:
        bb, ba = self.best_bid, self.best_ask
        return (bb + ba) / 2.0 if bb is not None and ba is not None else math.nan

    def top(self, n: int) -> tuple[F64, F64, F64, F64]:
        """Best ``n`` levels per side: (bid_px, bid_sz, ask_px, ask_sz), best first, NaN padded."""
        if self._top_cache is not None and self._top_cache[0] == n:
            return self._top_cache[1]
        bp = np.full(n, np.nan)
        bs = np.full(n, np.nan)
        ap = np.full(n, np.nan)
        as_ = np.full(n, np.nan)
        bk = heapq.nlargest(n, self.bids) if len(self.bids) > n else sorted(self.bids, reverse=True)
        ak = heapq.nsmallest(n, self.asks) if len(self.asks) > n else sorted(self.asks)
        if bk:
            bp[: len(bk)] = bk
            bs[: len(bk)] = [self.bids[p] for p in bk]
        if ak:
            ap[: len(ak)] = ak
            as_[: len(ak)] = [self.asks[p] for p in ak]
        out = (bp, bs, ap, as_)
        self._top_cache = (n, out)
        return out

    def fill_top(self, out: F64, n: int) -> None:
        """Write bid_px, bid_sz, ask_px, ask_sz (n each) back to back into ``out[:4n]``."""
        bp, bs, ap, as_ = self.top(n)
        out[0:n] = bp
        out[n : 2 * n] = bs
        out[2 * n : 3 * n] = ap
        out[3 * n : 4 * n] = as_


def apply_price_change(pc: PriceChange, books: Mapping[str, TokenBook]) -> list[TokenBook]:
    """Apply every level change of ``pc`` to its token's book; check each touched book once.

    The venue top used for the check is the one sent with the last change of that token in the frame
    (old-shape events carry none: then only a crossed book is detected).
    """
    touched: dict[str, tuple[TokenBook, float | None, float | None, bool]] = {}
    for c in pc.changes:
        book = books.get(c.asset_id)
        if book is None:
            continue
        book.set_level(c.side, c.price, c.size)
        has_top = c.best_bid is not None or c.best_ask is not None
        touched[c.asset_id] = (book, c.best_bid, c.best_ask, has_top)
    repaired: list[TokenBook] = []
    for book, bb, ba, has_top in touched.values():
        book.touch(pc.timestamp)
        if book.check_top(bb, ba, check_venue=has_top):
            repaired.append(book)
    return repaired
