"""Book walking for paper fills (pure): levels of a recorded state, best first, and the taker fee per level.

Guarantees: levels with NaN / non-positive size or a price outside (0, 1] are skipped; a buy spends at most its
budget (fee excluded), a sell sells at most its shares; :func:`scalar_fee` is :func:`common.fees.taker_fee`
for one scalar trade (tests pin the equality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.schema import BOOK_LEVELS, RAW_INDEX

F64 = npt.NDArray[np.float64]
EPS = 1e-9


def scalar_fee(shares: float, price: float, rate: float, exponent: float) -> float:
    """:func:`common.fees.taker_fee` for one scalar trade (same formula, no numpy overhead on the tick path;
    tests pin the equality)."""
    p = min(max(price, 0.0), 1.0)
    return float(shares * rate * (p * (1.0 - p)) ** exponent)


def _levels(token: str, side: str) -> tuple[list[int], list[int]]:
    return (
        [RAW_INDEX[f"{token}_{side}_px_{i}"] for i in range(BOOK_LEVELS)],
        [RAW_INDEX[f"{token}_{side}_sz_{i}"] for i in range(BOOK_LEVELS)],
    )


_BOOK = {(tok, s): _levels(tok, s) for tok in ("up", "dn") for s in ("bid", "ask")}


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of walking book levels: shares filled, notional (sum px * shares), fee, levels touched."""

    shares: float
    notional: float
    fee: float
    levels: int

    @property
    def avg_px(self) -> float:
        return self.notional / self.shares if self.shares > 0 else math.nan


def _book(raw: F64, token: str, side: str) -> list[tuple[float, float]]:
    pxi, szi = _BOOK[(token, side)]
    lv = [(float(raw[p]), float(raw[s])) for p, s in zip(pxi, szi, strict=True)]
    lv = [(p, s) for p, s in lv if math.isfinite(p) and math.isfinite(s) and 0.0 < p <= 1.0 and s > 0.0]
    lv.sort(key=lambda x: x[0], reverse=side == "bid")  # best first
    return lv


def walk_buy(levels: list[tuple[float, float]], budget_usd: float, rate: float, exponent: float) -> Walk:
    """Spend up to ``budget_usd`` (fee excluded) at the asks, best first."""
    left, shares, notional, fee, used = budget_usd, 0.0, 0.0, 0.0, 0
    for px, sz in levels:
        if left <= EPS:
            break
        take = min(sz, left / px)
        shares += take
        notional += take * px
        fee += scalar_fee(take, px, rate, exponent)
        left -= take * px
        used += 1
    return Walk(shares, notional, fee, used)


def walk_sell(levels: list[tuple[float, float]], shares: float, rate: float, exponent: float) -> Walk:
    """Sell up to ``shares`` at the bids, best first."""
    left, filled, notional, fee, used = shares, 0.0, 0.0, 0.0, 0
    for px, sz in levels:
        if left <= EPS:
            break
        take = min(sz, left)
        filled += take
        notional += take * px
        fee += scalar_fee(take, px, rate, exponent)
        left -= take
        used += 1
    return Walk(filled, notional, fee, used)
