"""The fast bulk state decoder (common.schema.decode_states_columns_fast) the labeler reads with."""

from __future__ import annotations

import msgpack
import numpy as np

from common.schema import decode_states_columns, decode_states_columns_fast, encode_state
from tests.labeler_svc.synth import make_states


def test_fast_decoder_equals_reference() -> None:
    states = make_states(50)
    good = [encode_state(s) for s in states]
    no_pm = states[3]
    no_pm.pm = None
    d = msgpack.unpackb(good[7])
    d_bad_pm = {**d, "pm": {"slug": "x"}}
    d_no_pm_key = {k: v for k, v in d.items() if k != "pm"}
    d_bad_x = {**d, "x": b"\x00" * 8}
    d_bad_v = {**d, "v": 99}
    d_bad_t = {**d, "t": "now"}
    d_wide = {**d, "f": b"\x00" * 4 * 16}
    payloads = [
        *good[:5],
        encode_state(no_pm),
        b"\xc1junk",
        msgpack.packb([1, 2]),
        msgpack.packb(d_bad_pm),
        msgpack.packb(d_no_pm_key),
        msgpack.packb(d_bad_x),
        msgpack.packb(d_bad_v),
        msgpack.packb(d_bad_t),
        msgpack.packb(d_wide),
        b"\x00" * 20_000,
        *good[5:],
    ]
    ref, ref_bad = decode_states_columns(payloads)
    fast, fast_bad = decode_states_columns_fast(payloads)
    assert fast_bad == ref_bad and len(ref_bad) == 8
    assert fast.tick_ms.tobytes() == ref.tick_ms.tobytes()
    assert np.array_equal(fast.raw, ref.raw, equal_nan=True)
    assert fast.features.tobytes() == ref.features.tobytes()
    assert fast.flags.tobytes() == ref.flags.tobytes() and fast.slugs == ref.slugs
    assert len(fast) == 50 + 2  # the encoded states, one with pm=None and one without the pm key


def test_bulk_decoder_equals_fast_decoder() -> None:
    from archiver_svc.synth import synth_payloads
    from labeler_svc.decode import decode_states_bulk

    good = [b for _, b in synth_payloads("BTC-15M", 1_763_856_000_000, 4000)]  # several layouts
    d = msgpack.unpackb(good[7])
    bad = msgpack.packb({**d, "v": 99})
    wide = msgpack.packb({**d, "f": b"\x00" * 4 * 16})
    for payloads in (good, good[:1], [], good[:50] + [bad] + good[50:60], good[:10] + [wide] + good[10:]):
        ref, ref_bad = decode_states_columns_fast(payloads)
        tick, raw, flags, rejects = decode_states_bulk(payloads)
        assert rejects == ref_bad
        assert tick.tobytes() == ref.tick_ms.tobytes() and flags.tobytes() == ref.flags.tobytes()
        assert raw.dtype == np.float64 and raw.tobytes() == ref.raw.tobytes()
