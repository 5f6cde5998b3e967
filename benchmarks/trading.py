"""Trader: decision latency from a state's XADD to the decision, model swap time, ticks missed during swaps.

A private redis-server and a local store are started here. A publisher *process* XADDs one state per
market per tick (10 markets, 100 ms ticks; quick: 4 markets, fewer ticks), timestamping each pipeline
just before it is sent (``time.time_ns``, same machine clock as the trader), and during the run
promotes two good models and announces one bad one (NaN weights). The trader runs in this process.

Figures: ``decision_latency_p50_ms`` / ``_p99_ms`` / ``_max_ms`` = trader's ``decided_ns`` (policy
action taken, before the trades XADD) minus the publisher's XADD time; ``tick_p99_ms`` = the
trader's own read-to-recorded time per batch (includes the trades XADD); swap time = download +
verify + load off the tick path, and the pointer swap itself; ``missed_ticks`` (target 0).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from common import keys
from common.features import FEATURE_SET, market_features
from common.policy import architecture, init_weights, meta_features
from common.redisproc import RedisServer
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, encode_state, entry_id
from common.store import LocalStore
from common.streams import connect, publish_states

POLICY = "bench"
TICK_MS = 100
T0 = 1_767_225_600_000
WINDOW_MS = 900_000


def _state(market: str, tick: int, rng: np.random.Generator) -> bytes:
    raw = np.full(N_RAW, np.nan)
    mid = float(np.clip(0.5 + rng.normal(0, 0.15), 0.05, 0.95))
    for i in range(5):
        for tok, m in (("up", mid), ("dn", 1 - mid)):
            raw[RAW_INDEX[f"{tok}_ask_px_{i}"]] = min(round(m + 0.01, 2) + 0.01 * i, 0.99)
            raw[RAW_INDEX[f"{tok}_bid_px_{i}"]] = max(round(m - 0.01, 2) - 0.01 * i, 0.01)
            raw[RAW_INDEX[f"{tok}_ask_sz_{i}"]] = rng.uniform(20, 200)
            raw[RAW_INDEX[f"{tok}_bid_sz_{i}"]] = rng.uniform(20, 200)
    start = tick // WINDOW_MS * WINDOW_MS
    raw[RAW_INDEX["pm_start_s"]], raw[RAW_INDEX["pm_end_s"]] = start / 1000, (start + WINDOW_MS) / 1000
    for k in ("bn_close_0", "bn_close_1m", "bn_close_5m", "bn_close_10m", "bn_close_60m"):
        raw[RAW_INDEX[k]] = 60_000 * (1 + rng.normal(0, 0.002))
    raw[RAW_INDEX["bn_buy_notional"]], raw[RAW_INDEX["bn_sell_notional"]] = rng.uniform(0, 1e6, 2)
    f = market_features(raw[None, :], np.array([tick]))[0]
    pm = PolymarketWindow(f"btc-updown-15m-{start // 1000}", "0xc", "1", "2", start, start + WINDOW_MS)
    return encode_state(State(market, tick, raw, f, FEATURE_SET, 0, pm))


def _publish(url: str, store_dir: str, markets: list[str], n: int, out: Any) -> None:
    """Publisher process: pre-encoded states, one pipeline per tick on the 100 ms grid; swaps mid-run."""
    from common.artefact import promote, publish_model_updated

    r = connect(url)
    store = LocalStore(store_dir)
    rng = np.random.default_rng(0)
    ticks = [T0 + TICK_MS * i for i in range(n)]
    payloads = [[_state(m, t, rng) for m in markets] for t in ticks]
    actions = {n * 3 // 10: ("promote", "v2"), n // 2: ("bad", "v-bad"), n * 7 // 10: ("promote", "v3")}
    stamps: list[int] = []
    next_t = time.monotonic()
    for i, t in enumerate(ticks):
        next_t += TICK_MS / 1000
        entries = [(keys.states_stream(m), entry_id(t), p) for m, p in zip(markets, payloads[i], strict=True)]
        stamps.append(time.time_ns())
        publish_states(r, entries)
        if i in actions:
            kind, v = actions[i]
            if kind == "promote":
                promote(store, POLICY, v, redis=r)
            else:
                meta = __import__("json").loads(store.get(f"models/{POLICY}/{v}/meta.json"))
                publish_model_updated(r, POLICY, meta)
        time.sleep(max(0.0, next_t - time.monotonic()))
    out.put({"ticks": ticks, "stamps": stamps})
    r.close()


def _models(store: LocalStore) -> None:
    import hashlib
    import json

    from safetensors.numpy import save as st_save

    from common.artefact import promote, save_model

    meta = {**meta_features(), "architecture": architecture(), "algorithm": "bench"}
    for i, v in enumerate(("v1", "v2", "v3"), start=1):
        save_model(store, POLICY, init_weights(i), meta, version=v)
    promote(store, POLICY, "v1")
    bad = init_weights(9)
    bad["actor.fc1.weight"][0, 0] = np.nan
    data = bytes(st_save(bad))
    store.put(f"models/{POLICY}/v-bad/model.safetensors", data)
    full = {**meta, "version": "v-bad", "sha256": hashlib.sha256(data).hexdigest(),
            "uri": f"{store.url}/models/{POLICY}/v-bad/model.safetensors"}  # fmt: skip
    store.put(f"models/{POLICY}/v-bad/meta.json", json.dumps(full).encode())


def run(quick: bool = False) -> dict[str, Any]:
    from trader_svc.paper import PaperConfig
    from trader_svc.service import Trader, TraderConfig

    n_markets, n_ticks = (4, 80) if quick else (10, 600)
    markets = [f"M{i:02d}-15M" for i in range(n_markets)]
    with tempfile.TemporaryDirectory(prefix="fusion-bench-trade-") as tmp, RedisServer() as srv:
        store = LocalStore(Path(tmp) / "store")
        _models(store)
        cfg = TraderConfig("bench", POLICY, markets, PaperConfig(position_usd=10.0), tick_ms=TICK_MS, block_ms=100,
                           metrics_every_s=3600.0)  # fmt: skip
        trader = Trader(cfg, srv.url, store)
        runner = threading.Thread(target=trader.run, daemon=True)
        runner.start()
        trader.ready.wait(30)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        pub = ctx.Process(target=_publish, args=(srv.url, str(store.root), markets, n_ticks, q))
        pub.start()
        res = q.get(timeout=n_ticks * TICK_MS / 1000 + 120)
        pub.join(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(trader.stats.last_tick.get(m) != res["ticks"][-1] for m in markets):
            time.sleep(0.01)
        trader.stop()
        runner.join(10)
        r = connect(srv.url)
        recs = [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(keys.trades_stream("bench"))]
        r.close()
    stamp = dict(zip(res["ticks"], res["stamps"], strict=True))
    dec = [x for x in recs if x["type"] == "decision"]
    lat = np.array([(x["decided_ns"] - stamp[x["tick"]]) / 1e6 for x in dec])
    st = trader.stats
    loads = st.loads
    swaps = st.swaps
    tick_ms = np.asarray(st.tick_s) * 1e3
    decided = {(x["market"], x["tick"]) for x in dec}
    never = sum((m, t) not in decided for m in markets for t in res["ticks"])
    return {
        "markets": n_markets,
        "ticks": n_ticks,
        "decisions": len(dec),
        "decision_latency_p50_ms": float(np.percentile(lat, 50)),
        "decision_latency_p99_ms": float(np.percentile(lat, 99)),
        "decision_latency_max_ms": float(lat.max()),
        "tick_p50_ms": float(np.percentile(tick_ms, 50)),
        "tick_p99_ms": float(np.percentile(tick_ms, 99)),
        "swaps": len(swaps),
        "rejected": len(st.rejected),
        "swap_load_total_ms_max": max((ld["total_s"] for ld in loads), default=float("nan")) * 1e3,
        "swap_download_ms_max": max((ld["download_s"] for ld in loads), default=float("nan")) * 1e3,
        "swap_verify_ms_max": max((ld["verify_s"] for ld in loads), default=float("nan")) * 1e3,
        "swap_build_ms_max": max((ld["build_s"] for ld in loads), default=float("nan")) * 1e3,
        "pointer_swap_us_max": max((s["swap_ns"] for s in swaps), default=0) / 1e3,
        "missed_ticks": int(sum(st.missed.values())),
        "ticks_never_decided": int(never),
        "feature_mismatches": st.feature_mismatches,
    }
