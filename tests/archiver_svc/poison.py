"""Schema-valid state entries that the system must refuse (issue 10, defect 5), and helpers to plant them."""

from __future__ import annotations

import dataclasses

import numpy as np

from archiver_svc.synth import synth_payloads
from common.schema import RAW_INDEX, decode_state, encode_state


def poisoned(market: str, tick_ms: int, dup_tick_ms: int) -> list[tuple[str, bytes, str]]:
    """``(entry id, payload, what)`` of four bad states at ticks ``tick_ms + 0..3`` ms (schema-valid each):
    another market's name, a payload tick (``dup_tick_ms``) other than the entry ID, an all-NaN row and an
    infinite price."""
    base = decode_state(synth_payloads(market, tick_ms, 1)[0][1])
    out = []
    for k, what in enumerate(("other market", "tick != id", "all NaN", "infinite price")):
        t = tick_ms + k
        s = dataclasses.replace(base, tick_ms=t, raw=base.raw.copy())
        if what == "other market":
            s.market = "ETH-15M" if market != "ETH-15M" else "BTC-15M"
        elif what == "tick != id":
            s.tick_ms = dup_tick_ms
        elif what == "all NaN":
            s.raw[:] = np.nan
        else:
            s.raw[RAW_INDEX["up_ask_px_0"]] = np.inf
        out.append((f"{t}-0", encode_state(s), what))
    return out
