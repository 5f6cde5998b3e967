"""common.validate: each rule, and the bulk check agreeing with the one-by-one check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from archiver_svc.synth import synth_payloads
from common.features import N_MARKET_FEATURES
from common.schema import N_RAW, RAW_INDEX, Label, State, decode_state, encode_label, encode_state
from common.validate import check_payloads, check_state, decode_entry, parse_entry_ids

M = "BTC-15M"
T = 1_763_856_000_000


def base() -> State:
    return decode_state(synth_payloads(M, T, 1)[0][1])


def variant(**kw: object) -> State:
    s = base()
    kw = {"raw": s.raw.copy(), "features": s.features.copy(), **kw}
    return dataclasses.replace(s, **kw)  # type: ignore[arg-type]


def with_raw(name: str, v: float) -> State:
    s = variant()
    s.raw[RAW_INDEX[name]] = v
    return s


@pytest.mark.parametrize(
    ("state", "eid", "reason"),
    [
        (variant(market="ETH-15M"), f"{T}-0", "market 'ETH-15M'"),
        (variant(tick_ms=T + 1), f"{T}-0", "!= tick"),
        (variant(), f"{T}-1", "!= tick"),
        (variant(), "nonsense", "bad entry id"),
        (variant(tick_ms=0), "0-0", "tick outside"),
        (with_raw("up_ask_px_0", np.inf), f"{T}-0", "up_ask_px_0 is infinite"),
        (with_raw("bn_last_px", -np.inf), f"{T}-0", "bn_last_px is infinite"),
        (variant(raw=np.full(N_RAW, np.nan)), f"{T}-0", "all NaN"),
        (variant(features=np.full(N_MARKET_FEATURES, np.nan, np.float32)), f"{T}-0", "not finite"),
        (variant(features=np.zeros(15, np.float32)), f"{T}-0", "15 features"),
        (variant(features=np.full(N_MARKET_FEATURES, 1.5, np.float32)), f"{T}-0", "outside [-1, 1]"),
    ],
)
def test_each_rule_refuses_with_its_reason(state: State, eid: str, reason: str) -> None:
    why = check_state(M, eid, state)
    assert why is not None and reason in why
    s, why2 = decode_entry(M, eid, encode_state(state))
    assert s is None and why2 == why
    assert check_payloads(M, "states", [eid], [encode_state(state)]) == [(0, why)]


@pytest.mark.parametrize(
    "state",
    [
        variant(),
        with_raw("up_ask_px_3", np.nan),  # NaN: not known
        with_raw("up_bid_px_4", -0.02),  # out of range but finite: the traders refuse the price, not the state
        variant(feature_set="market-v0", features=np.full(4, 3.0, np.float32)),  # another feature set
    ],
)
def test_usable_states_pass(state: State) -> None:
    eid = f"{state.tick_ms}-0"
    assert check_state(M, eid, state) is None
    s, why = decode_entry(M, eid, encode_state(state))
    assert why is None and s is not None and s.tick_ms == state.tick_ms


def test_bulk_check_agrees_with_one_by_one() -> None:
    pairs = synth_payloads(M, T, 60)
    ids: list[str | bytes] = [e for e, _ in pairs]
    payloads: list[object] = [p for _, p in pairs]
    bad_states = [variant(market="X"), variant(tick_ms=T + 7), variant(raw=np.full(N_RAW, np.nan)),
                  with_raw("bn_bid", np.inf)]  # fmt: skip
    for k, s in zip((5, 17, 33, 48), bad_states, strict=True):
        payloads[k] = encode_state(dataclasses.replace(s, tick_ms=int(ids[k].split("-")[0]) if k != 17 else s.tick_ms))
    payloads[50] = b"\xc1 garbage"
    payloads[51] = None
    ids[52] = "18446744073709551615-0"  # above int64
    got = check_payloads(M, "states", ids, payloads)
    assert [i for i, _ in got] == [5, 17, 33, 48, 50, 51, 52]
    for i, why in got:
        if isinstance(payloads[i], bytes):
            assert decode_entry(M, ids[i], payloads[i])[1] == why or i == 52


def test_labels_market_and_tick() -> None:
    def lab(market: str, tick: int) -> bytes:
        return encode_label(Label(market, tick, (30,), np.zeros((1, 3), np.float32), np.zeros(1, np.int8),
                                  np.ones(1, np.uint8), np.zeros(1, np.uint8)))  # fmt: skip

    got = check_payloads(M, "labels", [f"{T}-0", f"{T + 1}-0", f"{T + 2}-0"], [lab(M, T), lab("ETH", T + 1), lab(M, T)])
    assert [i for i, _ in got] == [1, 2] and "market" in got[0][1] and "!= tick" in got[1][1]


def test_parse_entry_ids() -> None:
    ms, seq, ok = parse_entry_ids([b"12-0", "13-5", "x-1", "99999999999999999999-0"])
    assert ok.tolist() == [True, True, False, False] and ms[:2].tolist() == [12, 13] and seq[:2].tolist() == [0, 5]
    ms, seq, ok = parse_entry_ids([f"{T + i}-0".encode() for i in range(10)])  # the vectorised path
    assert ok.all() and ms.tolist() == [T + i for i in range(10)] and not seq.any()
