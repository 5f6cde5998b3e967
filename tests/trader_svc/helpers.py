"""Hand-made states and model artefacts for the trader tests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from safetensors.numpy import save as st_save

from common.artefact import ModelRef, save_model
from common.features import FEATURE_SET, market_features
from common.policy import architecture, init_weights, meta_features
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, encode_state
from common.store import ObjectStore

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_MS = 900_000


def raw_book(
    up_asks: list[tuple[float, float]] = (),
    up_bids: list[tuple[float, float]] = (),
    dn_asks: list[tuple[float, float]] = (),
    dn_bids: list[tuple[float, float]] = (),
    start_s: float = T0 / 1000,
    end_s: float = T0 / 1000 + 900,
    **extra: float,
) -> np.ndarray:
    """A raw vector with the given book levels (best first), window and extra fields; the rest NaN."""
    raw = np.full(N_RAW, np.nan)
    for tok, side, levels in (("up", "ask", up_asks), ("up", "bid", up_bids), ("dn", "ask", dn_asks),
                              ("dn", "bid", dn_bids)):  # fmt: skip
        for i, (px, sz) in enumerate(levels):
            raw[RAW_INDEX[f"{tok}_{side}_px_{i}"]] = px
            raw[RAW_INDEX[f"{tok}_{side}_sz_{i}"]] = sz
    raw[RAW_INDEX["pm_start_s"]] = start_s
    raw[RAW_INDEX["pm_end_s"]] = end_s
    for k, v in extra.items():
        raw[RAW_INDEX[k]] = v
    return raw


def synth_raw(rng: np.random.Generator, tick_ms: int) -> np.ndarray:
    """A plausible state: two-sided books around a random mid, Binance fields, in a 15-minute window."""
    start = tick_ms // WINDOW_MS * WINDOW_MS
    mid = float(np.clip(0.5 + rng.normal(0, 0.15), 0.05, 0.95))
    up_bid, up_ask = round(mid - 0.01, 2), round(mid + 0.01, 2)
    raw = raw_book(
        up_asks=[(min(up_ask + 0.01 * i, 0.99), float(rng.uniform(20, 200))) for i in range(5)],
        up_bids=[(max(up_bid - 0.01 * i, 0.01), float(rng.uniform(20, 200))) for i in range(5)],
        dn_asks=[(min(1 - up_bid + 0.01 * i, 0.99), float(rng.uniform(20, 200))) for i in range(5)],
        dn_bids=[(max(1 - up_ask - 0.01 * i, 0.01), float(rng.uniform(20, 200))) for i in range(5)],
        start_s=start / 1000,
        end_s=(start + WINDOW_MS) / 1000,
    )
    c = 60_000 * (1 + rng.normal(0, 0.002, 5))
    for k, v in zip(("bn_close_0", "bn_close_1m", "bn_close_5m", "bn_close_10m", "bn_close_60m"), c, strict=True):
        raw[RAW_INDEX[k]] = v
    raw[RAW_INDEX["bn_buy_notional"]] = rng.uniform(0, 1e6)
    raw[RAW_INDEX["bn_sell_notional"]] = rng.uniform(0, 1e6)
    raw[RAW_INDEX["bn_net_10s"]] = rng.normal(0, 3e5)
    raw[RAW_INDEX["bn_net_prev_10s"]] = rng.normal(0, 3e5)
    raw[RAW_INDEX["bn_trades_10s"]] = rng.uniform(0, 500)
    raw[RAW_INDEX["bn_rv_1h"]] = rng.uniform(0, 0.02)
    return raw


def make_state(market: str, tick_ms: int, raw: np.ndarray) -> State:
    f = market_features(raw[None, :], np.array([tick_ms]))[0]
    start, end = int(raw[RAW_INDEX["pm_start_s"]] * 1000), int(raw[RAW_INDEX["pm_end_s"]] * 1000)
    pm = PolymarketWindow(f"btc-updown-15m-{start // 1000}", "0xc", "1", "2", start, end)
    return State(market, tick_ms, raw, f, FEATURE_SET, 0, pm)


def encoded(market: str, tick_ms: int, rng: np.random.Generator) -> bytes:
    return encode_state(make_state(market, tick_ms, synth_raw(rng, tick_ms)))


def good_meta() -> dict[str, Any]:
    return {**meta_features(), "architecture": architecture(), "algorithm": "test"}


def save_good(store: ObjectStore, policy: str, version: str, seed: int = 0) -> ModelRef:
    return save_model(store, policy, init_weights(seed), good_meta(), version=version)


def save_raw(store: ObjectStore, policy: str, version: str, weights: dict[str, np.ndarray],
             meta: dict[str, Any] | None = None, sha: str | None = None) -> dict[str, str]:  # fmt: skip
    """Write an artefact without the registry's checks (for bad models). Returns the pointer."""
    data = bytes(st_save({k: np.ascontiguousarray(v) for k, v in weights.items()}))
    real = hashlib.sha256(data).hexdigest()
    prefix = f"models/{policy}/{version}/"
    store.put(prefix + "model.safetensors", data)
    uri = f"{store.url}/{prefix}model.safetensors"
    full = {**(meta if meta is not None else good_meta()), "policy": policy, "version": version,
            "sha256": sha or real, "uri": uri}  # fmt: skip
    store.put(prefix + "meta.json", json.dumps(full).encode())
    return {"version": version, "uri": uri, "sha256": sha or real}


def save_always(store: ObjectStore, policy: str, version: str, action: int) -> ModelRef:
    """A valid model that picks ``action`` whatever it sees (output weights zero, bias one-hot)."""
    w = init_weights(0)
    w["actor.out.weight"] = np.zeros_like(w["actor.out.weight"])
    bias = np.zeros_like(w["actor.out.bias"])
    bias[action] = 10.0
    w["actor.out.bias"] = bias
    return save_model(store, policy, w, good_meta(), version=version)


def window_raw(tick_ms: int, window_ms: int, up_ask: float | None = 0.5, up_bid: float | None = 0.45,
               prev_settle: float | None = None, t0: int = T0) -> np.ndarray:  # fmt: skip
    """A state of the window (of ``window_ms``, counted from ``t0``) containing ``tick_ms``; books of depth
    1,000 at the given prices (None: empty); ``prev_settle`` names the previous window's resolution."""
    start = t0 + (tick_ms - t0) // window_ms * window_ms
    extra = {}
    if prev_settle is not None:
        extra = {"pm_prev_end_s": start / 1000, "pm_prev_settle_up": prev_settle}
    return raw_book(
        up_asks=[(up_ask, 1000.0)] if up_ask is not None else [],
        up_bids=[(up_bid, 1000.0)] if up_bid is not None else [],
        dn_asks=[(1 - up_bid + 0.01, 1000.0)] if up_bid is not None else [],
        dn_bids=[(1 - up_ask - 0.01, 1000.0)] if up_ask is not None else [],
        start_s=start / 1000,
        end_s=(start + window_ms) / 1000,
        **extra,
    )
