"""Layout templates: the fast path accepts exactly what the schema decoders accept."""

from __future__ import annotations

import numpy as np
import pytest

from archiver_svc.synth import synth_payloads, synth_states
from common.layout import Validator, build_template, extract
from common.schema import SchemaError, decode_state, encode_state
from tests.archiver_svc.helpers import T0, label_payload


def test_validator_accepts_valid_and_uses_templates() -> None:
    v = Validator("states")
    pairs = synth_payloads("BTC-15M", T0, 300)
    assert all(v.check(b) is None for _, b in pairs)
    assert 1 <= len(v.templates) <= 2


def test_validator_rejects_what_decode_state_rejects() -> None:
    v = Validator("states")
    good = synth_payloads("BTC-15M", T0, 5)[0][1]
    assert v.check(good) is None
    t = v.templates[0]
    x = t.fields["x"]
    st = t.fields["st"]
    bad_cases = [
        good[:-1],  # truncated
        good[: x.start - 3] + b"\xc4" + good[x.start - 2 :],  # x header altered
        good[: st.start] + b"\xc0" + good[st.start + 1 :],  # st := nil (same length, fixint region)
        good[: st.start] + b"\xcc" + good[st.start + 1 :],  # st := incomplete uint8
        b"\x81\xa1v\x02",
        "not bytes",
        label_payload("BTC-15M", T0),
    ]
    for b in bad_cases:
        reason = v.check(b)
        assert reason, b
        if isinstance(b, bytes):
            with pytest.raises(SchemaError):
                decode_state(b)


def test_random_byte_flips_never_fool_the_fast_path() -> None:
    rng = np.random.default_rng(0)
    good = synth_payloads("BTC-15M", T0, 2)
    v = Validator("states")
    assert v.check(good[0][1]) is None
    for _ in range(2000):
        b = bytearray(good[1][1])
        i = int(rng.integers(len(b)))
        b[i] = int(rng.integers(256))
        try:
            decode_state(bytes(b))
            ok = True
        except SchemaError:
            ok = False
        assert (v.check(bytes(b)) is None) == ok


def test_extract_matches_full_decode() -> None:
    states = synth_states("BTC-15M", T0 - 300_000, 2500)  # crosses 15-minute markets: several templates
    states[7].flags = 200  # another int width for st
    states[9].pm = None
    payloads = [encode_state(s) for s in states] + [b"\x00junk"]
    groups, left = extract(payloads, "states")
    assert left == [len(payloads) - 1]
    seen = np.zeros(len(payloads), bool)
    for g in groups:
        for j, i in enumerate(g.rows.tolist()):
            s = states[i]
            assert g.columns["t"][j] == s.tick_ms and g.columns["st"][j] == s.flags
            assert np.array_equal(g.columns["x"][j].view("<f8"), s.raw, equal_nan=True)
            assert np.array_equal(g.columns["f"][j].view("<f4"), s.features)
            seen[i] = True
    assert seen[:-1].all()


def test_build_template_refuses_unusual_layout() -> None:
    assert build_template(b"\x80", "states") is None


def test_check_many_same_verdicts_as_check() -> None:
    # several layouts (a new Polymarket window every 15 min), more than the validator keeps, and bad rows
    pairs = synth_payloads("BTC-15M", T0, 20_000)
    payloads: list[object] = [b for _, b in pairs[::2]]
    good = payloads[3]
    assert isinstance(good, bytes)
    payloads[100] = good[:-1]
    payloads[200] = b"\xc1junk"
    payloads[300] = label_payload("BTC-15M", T0)
    payloads[400] = good[:-1] + b"\xc0"  # same length: st := nil
    ref = [(i, r) for i, p in enumerate(payloads) if (r := Validator("states").check(p)) is not None]
    v = Validator("states", max_templates=2)
    assert v.check_many(payloads) == ref and [i for i, _ in ref] == [100, 200, 300, 400]
    assert v.check_many(payloads[:5] + ["not bytes"]) == [(5, "payload is str, not bytes")]
