"""Polymarket state of one market for the tick loop (pure logic, event time only).

Public API
----------
``PolymarketMarketState(spec, levels=BOOK_LEVELS, mid_window_ms=300_000, resolution_grace_ms=900_000)``
    ``add_window(w) -> bool``           a discovered window (current or next of a rolling series)
    ``window_at(t_ms)``                 the window a tick at ``t_ms`` belongs to (None: no market)
    ``window``                          ``window_at`` of the newest time seen (property)
    ``latest_window``                   the last-starting known window
    ``windows()``                       every known window, by start (discovery skips those)
    ``advance(now_ms) -> PolymarketWindow | None``   moves "now" forward, retires old windows, returns ``window``
    ``tokens()``, ``condition_ids()``, ``wanted_tokens()``   what the client subscribes and routes here
    ``apply(event) -> list[TokenBook]``  one parsed wire event; returns books that need a fresh snapshot
    ``sample_tick(tick_ms)``            records the Up mid once per tick (call before ``fill_raw``)
    ``fill_raw(x, tick_ms)``            writes the Polymarket fields of ``RAW_FIELDS`` (NaN when unknown)
    ``flags(tick_ms) -> int``           NO_PM_MARKET | POLY_BOOK_EMPTY | PM_RESOLVED bits

Guarantees: every time used here is venue event time (the ``timestamp`` of events and the tick time
passed in), so a replay gives identical rows. A rolling series switches to its next window exactly
at the old window's ``end_ms`` (a tick at ``end_ms`` belongs to the new window, whatever the order in
which ``advance``/``fill_raw`` are called); the old window stays subscribed until its
``market_resolved`` arrives (or ``resolution_grace_ms`` after its end), which fills
``pm_prev_settle_up``. ``up_mid_std_5m`` is the population std of the two-sided Up mids sampled at
the ticks of the last ``mid_window_ms`` (``(t - 300 s, t]``) of the current window; the ring restarts
at a rollover (mids of different windows are unrelated). A fixed market's single window is current
at every time.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from common.markets import MarketSpec
from common.schema import (
    BOOK_LEVELS,
    NO_PM_MARKET,
    PM_RESOLVED,
    POLY_BOOK_EMPTY,
    RAW_INDEX,
    PolymarketWindow,
)
from observer_svc.polymarket_book import TokenBook, apply_price_change
from observer_svc.polymarket_wire import (
    BestBidAsk,
    Book,
    Event,
    LastTradePrice,
    MarketResolved,
    PriceChange,
    TickSizeChange,
)

F64 = npt.NDArray[np.float64]
NAN = math.nan


def _block(token: str, levels: int) -> int:
    i0 = RAW_INDEX[f"{token}_bid_px_0"]
    # layout of common.schema: bid_px[levels], bid_sz[levels], ask_px[levels], ask_sz[levels]
    assert RAW_INDEX[f"{token}_bid_sz_0"] == i0 + levels
    assert RAW_INDEX[f"{token}_ask_px_0"] == i0 + 2 * levels
    assert RAW_INDEX[f"{token}_ask_sz_{levels - 1}"] == i0 + 4 * levels - 1
    return i0


_UP0 = _block("up", BOOK_LEVELS)
_DN0 = _block("dn", BOOK_LEVELS)
_I = RAW_INDEX
_SCALARS = (
    "up_last_trade_px",
    "dn_last_trade_px",
    "pm_start_s",
    "pm_end_s",
    "pm_settle_up",
    "pm_prev_end_s",
    "pm_prev_settle_up",
    "up_mid_std_5m",
    "up_mid_n_5m",
    "age_poly_ms",
)
_SCALAR_IDX = np.array([_I[n] for n in _SCALARS])
_UP_OUTCOMES = {"up", "yes"}
_DOWN_OUTCOMES = {"down", "no"}


class _Ring:
    """Time-sorted (tick_ms, value) samples in one growable array; the live part is a contiguous view."""

    __slots__ = ("t", "v", "lo", "hi")

    def __init__(self, cap: int = 1024) -> None:
        self.t = np.empty(cap, dtype=np.int64)
        self.v = np.empty(cap, dtype=np.float64)
        self.lo = self.hi = 0

    def clear(self) -> None:
        self.lo = self.hi = 0

    def append(self, t: int, v: float) -> None:
        if self.hi == len(self.t):
            n = self.hi - self.lo
            if n * 2 > len(self.t):  # mostly live: grow
                self.t = np.concatenate([self.t[self.lo : self.hi], np.empty(len(self.t), dtype=np.int64)])
                self.v = np.concatenate([self.v[self.lo : self.hi], np.empty(len(self.v), dtype=np.float64)])
            else:  # compact
                self.t[:n] = self.t[self.lo : self.hi]
                self.v[:n] = self.v[self.lo : self.hi]
            self.lo, self.hi = 0, n
        self.t[self.hi] = t
        self.v[self.hi] = v
        self.hi += 1

    def drop_until(self, t: int) -> None:
        """Drop samples with time <= t."""
        if self.hi > self.lo and self.t[self.lo] <= t:
            self.lo += int(np.searchsorted(self.t[self.lo : self.hi], t, side="right"))

    def values(self) -> F64:
        return self.v[self.lo : self.hi]


class PolymarketMarketState:
    """Windows, books, trades and resolutions of one market; see the module docstring."""

    def __init__(
        self,
        spec: MarketSpec,
        levels: int = BOOK_LEVELS,
        mid_window_ms: int = 300_000,
        resolution_grace_ms: int = 900_000,
    ) -> None:
        if levels != BOOK_LEVELS:
            raise ValueError(f"levels must be {BOOK_LEVELS} (schema v1)")
        self.spec = spec
        self.name = spec.name
        self.levels = levels
        self.mid_window_ms = mid_window_ms
        self.resolution_grace_ms = resolution_grace_ms
        self._windows: list[PolymarketWindow] = []  # sorted by start
        self._ended: deque[tuple[int, str]] = deque(maxlen=4)  # retired windows (end_ms, condition id)
        self.books: dict[str, TokenBook] = {}
        self.last_trade: dict[str, float] = {}
        self.settle_up: dict[str, float] = {}  # condition id -> 1.0 (Up/Yes won) | 0.0
        self.last_event_ms: int | None = None
        self._now_ms: int | None = None
        # Up-mid ring of the current window
        self._ring_cid = ""
        self._ring_last = -1  # last sampled tick
        self._ring = _Ring()

    # ------------------------------------------------------------------ windows
    def add_window(self, w: PolymarketWindow) -> bool:
        """Register a window; False when it is already known."""
        if any(x.condition_id == w.condition_id for x in self._windows):
            return False
        if not self.spec.is_series:
            for old in self._windows:
                self._drop_books(old)
            self._windows = []
        self._windows.append(w)
        self._windows.sort(key=lambda x: (x.start_ms, x.end_ms))
        for tok in (w.up_token, w.down_token):
            self.books.setdefault(tok, TokenBook(tok))
        return True

    def window_at(self, t_ms: int) -> PolymarketWindow | None:
        if not self._windows:
            return None
        if not self.spec.is_series:
            return self._windows[-1]
        for w in reversed(self._windows):
            if w.start_ms <= t_ms < w.end_ms:
                return w
        return None

    @property
    def window(self) -> PolymarketWindow | None:
        return self.window_at(self._now_ms) if self._now_ms is not None else None

    def windows(self) -> list[PolymarketWindow]:
        """The known windows, by start (current, next ones, and ended ones not yet retired)."""
        return list(self._windows)

    @property
    def latest_window(self) -> PolymarketWindow | None:
        return self._windows[-1] if self._windows else None

    def advance(self, now_ms: int) -> PolymarketWindow | None:
        """Move "now" forward (never back) and retire windows no longer needed; returns ``window``."""
        if self._now_ms is None or now_ms > self._now_ms:
            self._now_ms = now_ms
        now = self._now_ms
        if self.spec.is_series:
            keep: list[PolymarketWindow] = []
            for w in self._windows:
                done = now >= w.end_ms and (
                    w.condition_id in self.settle_up or now >= w.end_ms + self.resolution_grace_ms
                )
                if done:
                    self._drop_books(w)
                    self._ended.append((w.end_ms, w.condition_id))
                else:
                    keep.append(w)
            self._windows = keep
            live = {w.condition_id for w in keep} | {cid for _, cid in self._ended}
            for cid in [c for c in self.settle_up if c not in live]:
                del self.settle_up[cid]
        return self.window

    def _drop_books(self, w: PolymarketWindow) -> None:
        for tok in (w.up_token, w.down_token):
            self.books.pop(tok, None)
            self.last_trade.pop(tok, None)

    def tokens(self) -> list[str]:
        """Token ids of every window still watched (current, next, old awaiting resolution)."""
        return [t for w in self._windows for t in (w.up_token, w.down_token)]

    wanted_tokens = tokens

    def condition_ids(self) -> list[str]:
        return [w.condition_id for w in self._windows]

    def books_needing_resync(self) -> list[str]:
        return [tok for tok, b in self.books.items() if b.needs_resync]

    # ------------------------------------------------------------------ events
    def _seen(self, ts: int) -> None:
        if self.last_event_ms is None or ts > self.last_event_ms:
            self.last_event_ms = ts

    def apply(self, ev: Event) -> list[TokenBook]:
        """Apply one event routed to this market; returns the books repaired by it.

        Events of tokens / condition ids this market does not watch are ignored (not even their time).
        """
        if isinstance(ev, PriceChange):
            if not any(c.asset_id in self.books for c in ev.changes):
                return []
            repaired = apply_price_change(ev, self.books)
            self._seen(ev.timestamp)
            return repaired
        if isinstance(ev, MarketResolved):
            if self._resolve(ev):
                self._seen(ev.timestamp)
            return []
        asset = getattr(ev, "asset_id", None)
        b = self.books.get(asset) if isinstance(asset, str) else None
        if b is None:
            return []
        if isinstance(ev, Book):
            b.apply_book(ev)
            if ev.last_trade_price is not None and ev.asset_id not in self.last_trade:
                self.last_trade[ev.asset_id] = ev.last_trade_price
        elif isinstance(ev, LastTradePrice):
            self.last_trade[ev.asset_id] = ev.price
            b.touch(ev.timestamp)
        elif isinstance(ev, TickSizeChange):
            b.set_tick_size(ev.new_tick_size)
            b.touch(ev.timestamp)
        elif isinstance(ev, BestBidAsk):
            b.touch(ev.timestamp)
        else:
            return []
        self._seen(ev.timestamp)
        return []

    def _resolve(self, ev: MarketResolved) -> bool:
        for w in self._windows:
            if w.condition_id != ev.market and ev.winning_asset_id not in (w.up_token, w.down_token):
                continue
            outcome = ev.winning_outcome.lower()
            if ev.winning_asset_id == w.up_token or (ev.winning_asset_id != w.down_token and outcome in _UP_OUTCOMES):
                self.settle_up[w.condition_id] = 1.0
            elif ev.winning_asset_id == w.down_token or outcome in _DOWN_OUTCOMES:
                self.settle_up[w.condition_id] = 0.0
            else:
                return False
            return True
        return False

    # ------------------------------------------------------------------ ticks
    def _up_mid(self, w: PolymarketWindow | None) -> float:
        if w is None:
            return NAN
        b = self.books.get(w.up_token)
        return b.mid() if b is not None else NAN

    def sample_tick(self, tick_ms: int) -> None:
        """Record the current window's two-sided Up mid at this tick (once per tick)."""
        self.advance(tick_ms)
        w = self.window_at(tick_ms)
        cid = w.condition_id if w is not None else ""
        if cid != self._ring_cid:
            self._ring_cid = cid
            self._ring_last = -1
            self._ring.clear()
        if tick_ms <= self._ring_last:
            return
        self._ring_last = tick_ms
        self._trim(tick_ms)
        mid = self._up_mid(w)
        if math.isfinite(mid):
            self._ring.append(tick_ms, mid)

    def _trim(self, tick_ms: int) -> None:
        lo = tick_ms - self.mid_window_ms
        self._ring.drop_until(lo)

    def _prev(self, t_ms: int) -> tuple[float, float]:
        best_end, best_cid = -1, ""
        for end, cid in self._ended:
            if end <= t_ms and end > best_end:
                best_end, best_cid = end, cid
        for w in self._windows:
            if w.end_ms <= t_ms and w.end_ms > best_end:
                best_end, best_cid = w.end_ms, w.condition_id
        if best_end < 0:
            return NAN, NAN
        return best_end / 1000.0, self.settle_up.get(best_cid, NAN)

    def fill_raw(self, x: F64, tick_ms: int) -> None:
        """Write exactly the Polymarket fields of ``x`` (a RAW_FIELDS row) for the tick ``tick_ms``."""
        self.advance(tick_ms)
        n = self.levels
        w = self.window_at(tick_ms)
        vals = [NAN] * len(_SCALARS)
        x[_UP0 : _UP0 + 4 * n] = NAN
        x[_DN0 : _DN0 + 4 * n] = NAN
        if w is not None:
            up, dn = self.books.get(w.up_token), self.books.get(w.down_token)
            if up is not None:
                up.fill_top(x[_UP0 : _UP0 + 4 * n], n)
            if dn is not None:
                dn.fill_top(x[_DN0 : _DN0 + 4 * n], n)
            vals[0] = self.last_trade.get(w.up_token, NAN)
            vals[1] = self.last_trade.get(w.down_token, NAN)
            vals[2] = w.start_ms / 1000.0 if w.start_ms > 0 else NAN
            vals[3] = w.end_ms / 1000.0 if w.end_ms > 0 else NAN
            vals[4] = self.settle_up.get(w.condition_id, NAN)
        if self.spec.is_series:
            vals[5], vals[6] = self._prev(tick_ms)
        if w is not None and w.condition_id == self._ring_cid:
            self._trim(tick_ms)
            v = self._ring.values()
            k = len(v)
            if k:
                d = v - v.sum() / k
                vals[7] = math.sqrt(float(np.dot(d, d)) / k)
            vals[8] = float(k)
        else:
            vals[8] = 0.0
        if self.last_event_ms is not None:
            vals[9] = float(max(0, tick_ms - self.last_event_ms))
        x[_SCALAR_IDX] = vals

    def flags(self, tick_ms: int) -> int:
        w = self.window_at(tick_ms)
        if w is None:
            return NO_PM_MARKET
        st = 0
        up = self.books.get(w.up_token)
        if up is None or up.empty:
            st |= POLY_BOOK_EMPTY
        if w.condition_id in self.settle_up:
            st |= PM_RESOLVED
        return st
