"""Builds the fused states of every market of a process at one tick (pure, vectorised).

For a tick ``t`` it asks each market's venue sides to write their raw fields into one row of a
(markets x RAW_FIELDS) matrix (``bn_open_px`` from the Binance bar at the window's start), computes
the market features (``common.features.FEATURE_SET``) of all markets in one call of the shared
feature function, sets the staleness flags and encodes one msgpack state per market.
Same inputs -> same bytes (no wall-clock read here), which is what makes replays byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from common import keys
from common.features import FEATURE_SET, market_features
from common.schema import (
    N_RAW,
    NO_PM_MARKET,
    POLY_BOOK_EMPTY,
    RAW_INDEX,
    STALE_BINANCE,
    STALE_POLY,
    PolymarketWindow,
    State,
    encode_state,
    entry_id,
)


class BinanceSide(Protocol):
    """What the builder needs of a Binance symbol's aggregates."""

    def fill_raw(self, x: np.ndarray, tick_ms: int) -> None: ...

    def flags(self, tick_ms: int) -> int: ...

    def open_at(self, start_ms: int) -> float: ...


class PolymarketSide(Protocol):
    """What the builder needs of a market's Polymarket state."""

    @property
    def window(self) -> PolymarketWindow | None: ...

    def sample_tick(self, tick_ms: int) -> None: ...

    def fill_raw(self, x: np.ndarray, tick_ms: int) -> None: ...

    def flags(self, tick_ms: int) -> int: ...


@dataclass(slots=True)
class MarketSides:
    name: str
    binance: BinanceSide | None
    polymarket: PolymarketSide | None


_AGE_BN = RAW_INDEX["age_binance_ms"]
_AGE_PM = RAW_INDEX["age_poly_ms"]
_PM_START = RAW_INDEX["pm_start_s"]
_OPEN = RAW_INDEX["bn_open_px"]


class StateBuilder:
    """Turns the venue sides of many markets into encoded states for one tick."""

    def __init__(
        self, markets: Sequence[MarketSides], stale_binance_ms: int, stale_poly_ms: int, tick_ms: int = 500
    ) -> None:
        self.markets = list(markets)
        self.tick_s = tick_ms / 1000.0  # the tick length the features fit (vol_5m's minimum, staleness)
        self.n_poly_states = 0  # states of markets with a Polymarket side ...
        self.n_poly_empty = 0  # ... of which without a Polymarket market or book
        self.stale_binance_ms = stale_binance_ms
        self.stale_poly_ms = stale_poly_ms
        self.streams = [keys.states_stream(m.name) for m in self.markets]
        self.last_flags: list[tuple[str, int]] = []  # (market, flags) of the last tick built (per-market alerts)

    def build(self, tick_ms: int) -> list[State]:
        n = len(self.markets)
        if n == 0:  # an observer holding no lease right now
            return []
        x = np.full((n, N_RAW), np.nan, dtype=np.float64)
        flags = np.zeros(n, dtype=np.int64)
        windows: list[PolymarketWindow | None] = []
        for i, m in enumerate(self.markets):
            row = x[i]
            if m.polymarket is not None:
                m.polymarket.sample_tick(tick_ms)
                m.polymarket.fill_raw(row, tick_ms)
                flags[i] |= m.polymarket.flags(tick_ms)
                windows.append(m.polymarket.window)
            else:
                windows.append(None)
            if m.binance is not None:
                m.binance.fill_raw(row, tick_ms)
                flags[i] |= m.binance.flags(tick_ms)
                if row[_PM_START] == row[_PM_START]:  # not NaN: the window's strike proxy
                    row[_OPEN] = m.binance.open_at(int(row[_PM_START] * 1000))
        age_bn, age_pm = x[:, _AGE_BN], x[:, _AGE_PM]
        has_bn = np.array([m.binance is not None for m in self.markets], dtype=bool)
        has_pm = np.array([m.polymarket is not None for m in self.markets], dtype=bool)
        flags |= np.where(has_bn & ~(age_bn <= self.stale_binance_ms), STALE_BINANCE, 0)
        flags |= np.where(has_pm & ~(age_pm <= self.stale_poly_ms), STALE_POLY, 0)
        self.n_poly_states += int(has_pm.sum())
        self.n_poly_empty += int((has_pm & ((flags & (NO_PM_MARKET | POLY_BOOK_EMPTY)) != 0)).sum())
        ticks = np.full(n, tick_ms, dtype=np.int64)
        feats = market_features(x, ticks, flags, tick_s=self.tick_s)
        self.last_flags = [(m.name, int(flags[i])) for i, m in enumerate(self.markets)]
        return [
            State(
                market=m.name,
                tick_ms=tick_ms,
                raw=x[i],
                features=feats[i],
                feature_set=FEATURE_SET,
                flags=int(flags[i]),
                pm=windows[i],
            )
            for i, m in enumerate(self.markets)
        ]

    def build_entries(self, tick_ms: int) -> list[tuple[str, str, bytes]]:
        """``(stream, entry_id, payload)`` of every market at ``tick_ms``, ready for XADD."""
        eid = entry_id(tick_ms)
        return [(self.streams[i], eid, encode_state(s)) for i, s in enumerate(self.build(tick_ms))]
