"""Labels per second per process: batch (``label_columns`` on one week of one market at 0.5 s
ticks, 1.2 M states) and streaming through Redis (XREADGROUP -> decode -> label -> XADD + XACK)
on a private redis-server started here. Target >= 100,000 labels/s each.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common import keys
from common.features import FEATURE_SET, N_MARKET_FEATURES
from common.redisproc import RedisServer
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, StateColumns, encode_state, entry_id
from common.settings import Settings
from common.streams import connect, publish_states
from labeler_svc.labels import label_columns

TICK = 500
WINDOW = 900_000
T0 = (1_700_000_000_000 // WINDOW) * WINDOW


def synth_columns(n: int, seed: int = 0) -> StateColumns:
    """``n`` states of a rolling 15-minute market: Up/Down books around a random walk, settlements."""
    rng = np.random.default_rng(seed)
    tick = T0 + TICK * np.arange(n, dtype=np.int64)
    start = tick // WINDOW * WINDOW
    new_w = np.r_[True, start[1:] != start[:-1]]
    steps = rng.normal(0, 0.01, n)
    walk = np.cumsum(steps)
    first = np.maximum.accumulate(np.where(new_w, np.arange(n), 0))
    walk -= (walk - steps)[first]  # the walk restarts at 0 in each window
    mid = np.clip(0.5 + walk, 0.03, 0.97)
    raw = np.full((n, N_RAW), np.nan)
    up_bid = np.round(mid - 0.005, 3)
    up_ask = np.round(mid + 0.005, 3)
    for lvl in range(5):
        raw[:, RAW_INDEX[f"up_bid_px_{lvl}"]] = up_bid - 0.01 * lvl
        raw[:, RAW_INDEX[f"up_ask_px_{lvl}"]] = up_ask + 0.01 * lvl
        raw[:, RAW_INDEX[f"dn_bid_px_{lvl}"]] = 1 - up_ask - 0.01 * lvl
        raw[:, RAW_INDEX[f"dn_ask_px_{lvl}"]] = 1 - up_bid + 0.01 * lvl
    raw[:, RAW_INDEX["pm_start_s"]] = start / 1000
    raw[:, RAW_INDEX["pm_end_s"]] = (start + WINDOW) / 1000
    raw[:, RAW_INDEX["pm_prev_end_s"]] = start / 1000
    # the previous window's outcome (its last mid), known 20 s after the rollover
    last_idx = np.flatnonzero(np.r_[start[1:] != start[:-1], True])
    w_of = np.searchsorted(start[last_idx], start)  # window number of each row
    prev_out = np.where(w_of > 0, (mid[last_idx[np.maximum(w_of - 1, 0)]] > 0.5).astype(float), np.nan)
    known = tick - start >= 20_000
    raw[:, RAW_INDEX["pm_prev_settle_up"]] = np.where(known, prev_out, np.nan)
    flags = np.zeros(n, dtype=np.int32)
    return StateColumns(tick, raw, np.zeros((n, N_MARKET_FEATURES), np.float32), flags, [""] * n)


def _bench_batch(n: int, st: Settings) -> dict[str, Any]:
    cols = synth_columns(n)
    kw = {
        "tolerance_ms": st.label_tolerance_ms,
        "fee_rate": st.taker_fee_rate,
        "fee_exponent": st.taker_fee_exponent,
        "settle_wait_ms": st.label_settle_wait_s * 1000,
    }
    label_columns(cols, st.label_horizons_s, **kw)  # warm-up
    best = cpu = float("inf")
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        lc = label_columns(cols, st.label_horizons_s, **kw)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return {
        "batch_states": n,
        "batch_s": round(best, 3),
        "batch_labels_per_s": round(n / best),
        "batch_labels_per_cpu_s": round(n / cpu),
        "batch_valid_frac": round(float(lc.valid.mean()), 3),
    }


def _bench_stream(n_per_market: int, markets: list[str]) -> dict[str, Any]:
    from labeler_svc.service import LabelerService

    cols = synth_columns(n_per_market, seed=1)
    pm = PolymarketWindow("btc-updown-15m-0", "0xc0ffee", "1" * 40, "2" * 40, 0, 0)
    feats = np.zeros(N_MARKET_FEATURES, np.float32)
    with RedisServer() as srv:
        r = connect(srv.url)
        for m in markets:
            s = keys.states_stream(m)
            payloads = [  # each market's states name their market (a state of another market is refused)
                encode_state(State(m, int(t), cols.raw[i], feats, FEATURE_SET, 0, pm))
                for i, t in enumerate(cols.tick_ms)
            ]
            for a in range(0, n_per_market, 20_000):
                publish_states(
                    r,
                    [(s, entry_id(int(cols.tick_ms[i])), payloads[i]) for i in range(a, min(a + 20_000, n_per_market))],
                )
        st = Settings(redis_url=srv.url)
        svc = LabelerService(st, batch=10_000)
        cpu_r0 = _redis_cpu(r)
        t0, c0 = time.perf_counter(), time.process_time()
        svc.run(once=True)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        cpu_r = _redis_cpu(r) - cpu_r0
        n_labels = sum(r.xlen(keys.labels_stream(m)) for m in markets)
        pending = sum(r.xpending(keys.states_stream(m), keys.LABELER_GROUP)["pending"] for m in markets)
        svc.close()
        r.close()
    return {
        "stream_markets": len(markets),
        "stream_states": n_per_market * len(markets),
        "stream_labels": n_labels,
        "stream_left_pending": pending,
        "stream_s": round(dt, 3),
        "stream_labels_per_s": round(n_labels / dt),
        # the machine may be shared: CPU seconds are the noise-free figures
        "stream_labeler_cpu_s": round(cpu, 3),
        "stream_labels_per_labeler_cpu_s": round(n_labels / cpu),
        "stream_redis_cpu_s": round(cpu_r, 3),
        "stream_labels_per_redis_cpu_s": round(n_labels / cpu_r) if cpu_r > 0 else None,
    }


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(quick: bool = False) -> dict[str, Any]:
    st = Settings()
    out = _bench_batch(120_000 if quick else 1_200_000, st)
    out.update(_bench_stream(20_000 if quick else 150_000, ["BTC-15M", "ETH-15M"]))
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
