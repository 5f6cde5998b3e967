"""State and label schemas: round trips, strict decoding of bad input, bulk columns."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from common.features import FEATURE_SET, N_MARKET_FEATURES
from common.schema import (
    MAX_MESSAGE_BYTES,
    N_RAW,
    RAW_INDEX,
    STATE_VERSION,
    Label,
    PolymarketWindow,
    SchemaError,
    State,
    decode_label,
    decode_state,
    decode_states_columns,
    encode_label,
    encode_state,
    entry_id,
    tick_of_entry_id,
)

PM = PolymarketWindow("btc-updown-15m-1700000100", "0xabc", "111", "222", 1_700_000_100_000, 1_700_001_000_000)


def make_state(tick: int, seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=N_RAW)
    raw[RAW_INDEX["up_bid_px_3"]] = np.nan
    return State("BTC-15M", tick, raw, rng.normal(size=N_MARKET_FEATURES).astype(np.float32), FEATURE_SET, 5, PM)


def test_state_round_trip_is_exact() -> None:
    s = make_state(1_700_000_000_500)
    b = encode_state(s)
    d = decode_state(b)
    assert d.market == s.market and d.tick_ms == s.tick_ms and d.flags == 5 and d.pm == PM
    np.testing.assert_array_equal(d.raw, s.raw)  # NaN-aware, bit exact
    np.testing.assert_array_equal(d.features, s.features)
    assert encode_state(d) == b  # deterministic bytes
    assert len(b) < 1200


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2]), "not a msgpack map"),
        (msgpack.packb({"v": 99}), "unknown state version"),
        (msgpack.packb({"v": 1, "m": "X"}), "unknown state version 1"),  # v1 lacked bn_open_px
        (msgpack.packb({"v": STATE_VERSION, "m": "X"}), "lacks field"),
        (msgpack.packb({"v": STATE_VERSION, "m": "X", "t": 1, "x": b"12", "fs": "a", "f": b"", "st": 0}), "x must be"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_states_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(SchemaError, match=reason):
        decode_state(payload)


def test_columns_skip_bad_entries() -> None:
    good = [encode_state(make_state(1000 * i, i)) for i in range(5)]
    payloads = good[:2] + [b"junk"] + good[2:]
    cols, bad = decode_states_columns(payloads)
    assert len(cols) == 5 and [i for i, _ in bad] == [2]
    assert cols.raw.shape == (5, N_RAW) and cols.features.shape == (5, N_MARKET_FEATURES)
    np.testing.assert_array_equal(cols.raw[3], decode_state(good[3]).raw)


def test_label_round_trip() -> None:
    lb = Label(
        "BTC-15M",
        5000,
        (30, 60, 300),
        np.arange(9, dtype=np.float32).reshape(3, 3),
        np.array([2, -1, 1], dtype=np.int8),
        np.array([1, 0, 1], dtype=np.uint8),
        np.array([0, 255, 1], dtype=np.uint8),
    )
    d = decode_label(encode_label(lb))
    assert d.horizons_s == (30, 60, 300) and d.tick_ms == 5000
    np.testing.assert_array_equal(d.rewards, lb.rewards)
    np.testing.assert_array_equal(d.best, lb.best)
    with pytest.raises(SchemaError):
        decode_label(encode_state(make_state(1)))


def test_entry_ids() -> None:
    assert entry_id(1_700_000_000_500) == "1700000000500-0"
    assert tick_of_entry_id(b"1700000000500-0") == 1_700_000_000_500
