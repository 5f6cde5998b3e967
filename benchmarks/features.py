"""Speed of the one feature function (``common.features.market_features``): one state (the trader's
tick), 200 markets (the observer's tick) and a 1 M-state archive (the trainer's batch), called as the
observer and the trader call it (the states' flags and the tick length given); ``infer_tick_1m_ms`` is
the extra cost when the tick is inferred from the rows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common.features import FEATURE_SET, market_features
from common.schema import N_RAW


def _raw(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 0.99, (n, N_RAW))
    x[rng.random(x.shape) < 0.05] = np.nan
    return x, 1_763_856_000_000 + np.arange(n, dtype=np.int64) * 500


def _per_call_us(n: int, repeat: int) -> float:
    x, t = _raw(n)
    flags = np.zeros(n, np.int64)
    market_features(x, t, flags, tick_s=0.5)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            market_features(x, t, flags, tick_s=0.5)
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    big = 100_000 if quick else 1_000_000
    us_big = _per_call_us(big, 1)
    x, t = _raw(big)
    t0 = time.perf_counter()
    market_features(x, t)
    inferred_ms = (time.perf_counter() - t0) * 1000
    return {
        "feature_set": FEATURE_SET,
        "one_state_us": round(_per_call_us(1, 200 if quick else 2000), 2),
        "markets_200_us": round(_per_call_us(200, 100 if quick else 1000), 2),
        f"states_{big}_ms": round(us_big / 1000, 1),
        "states_per_s": round(big / (us_big / 1e6)),
        f"states_{big}_tick_inferred_ms": round(inferred_ms, 1),
    }
