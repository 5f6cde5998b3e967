"""Polymarket taker fees.

Fee of a taker trade of ``shares`` at price ``p`` (the venue's published fee schedule for
crypto Up/Down markets: ``rate`` 0.07, ``exponent`` 1, taker only):
``fee = shares * rate * (p * (1 - p)) ** exponent`` in USD. Settlement redemption is free.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.NDArray[np.float64] | float


def taker_fee(shares: ArrayLike, price: ArrayLike, rate: float = 0.07, exponent: float = 1.0) -> ArrayLike:
    p = np.clip(price, 0.0, 1.0)
    out = np.asarray(shares) * rate * np.power(p * (1.0 - p), exponent)
    return float(out) if np.ndim(out) == 0 else out


def fee_per_share(price: ArrayLike, rate: float = 0.07, exponent: float = 1.0) -> ArrayLike:
    return taker_fee(1.0, price, rate, exponent)
