"""The reader: ordered, de-duplicated numpy columns; bad objects reported and skipped."""

from __future__ import annotations

import numpy as np

from archiver_svc.reader import load_market
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import encode_object, object_key
from common.schema import decode_state
from common.store import LocalStore
from tests.archiver_svc.helpers import T0, label_payload

M = "BTC-15M"
W = 10_000


def write_archive(store, pairs, kind="states", market=M) -> list[str]:
    wins: dict[int, dict[str, bytes]] = {}
    for e, b in pairs:
        ms = int(e.split("-")[0])
        wins.setdefault(ms - ms % W, {})[e] = b
    keys = []
    for ws, ents in sorted(wins.items()):
        k = object_key(kind, market, ws)
        store.put(k, encode_object(kind, market, ws, W, ents))
        keys.append(k)
    return keys


def test_load_states_and_labels(tmp_path) -> None:
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0 + 1_000, 100)
    write_archive(store, pairs)
    write_archive(store, [(e, label_payload(M, int(e.split("-")[0]))) for e, _ in pairs[:60]], "labels")
    md = load_market(tmp_path, M)
    assert md.problems == []
    assert md.states.tick_ms.tolist() == [T0 + 1_000 + 500 * i for i in range(100)]
    s = decode_state(pairs[42][1])
    assert np.array_equal(md.states.raw[42], s.raw, equal_nan=True)
    assert np.array_equal(md.states.features[42], s.features)
    assert md.states.slugs[42] == s.pm.slug and md.states.flags[42] == s.flags
    lb = md.labels
    assert lb is not None and len(lb) == 60 and lb.horizons_s == (30, 60, 300)
    assert lb.rewards.shape == (60, 3, 3) and lb.best[0].tolist() == [1, 1, 2] and lb.valid[0].tolist() == [1, 1, 0]
    assert lb.tick_ms.tolist() == md.states.tick_ms[:60].tolist()


def test_time_range(tmp_path) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, synth_payloads(M, T0, 200))
    md = load_market(store, M, T0 + 12_345, T0 + 50_000)
    assert md.states.tick_ms[0] == T0 + 12_500 and md.states.tick_ms[-1] == T0 + 49_500
    assert len(load_market(store, M, T0 + 10**9, None).states) == 0
    assert len(load_market(store, "NOPE").states) == 0


def test_corrupt_and_truncated_objects_skipped(tmp_path) -> None:
    store = LocalStore(tmp_path)
    keys = write_archive(store, synth_payloads(M, T0, 100))  # 5 windows
    store.put(keys[1], store.get(keys[1])[:-50])  # truncated
    store.put(keys[3], b"garbage")  # corrupt
    md = load_market(store, M)
    assert len(md.states) == 60
    assert len(md.problems) == 2 and keys[1] in md.problems[0] and "truncated" in md.problems[0]
    assert keys[3] in md.problems[1]


def test_bad_entry_inside_object_skipped(tmp_path) -> None:
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 20)
    pairs[5] = (pairs[5][0], b"\x81\xa1v\x01")
    write_archive(store, pairs)
    md = load_market(store, M, columns_cache=False)
    assert len(md.states) == 19 and len(md.problems) == 1 and pairs[5][0] in md.problems[0]


def test_dedup_across_overlapping_objects(tmp_path) -> None:
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 40)
    write_archive(store, pairs)
    # an object of another window length that repeats entries (e.g. written with other settings)
    store.put(object_key("states", M, T0 + 5_000), encode_object("states", M, T0 + 5_000, 20_000, pairs[10:30]))
    md = load_market(store, M, columns_cache=False)
    assert md.states.tick_ms.tolist() == [T0 + 500 * i for i in range(40)]


def test_reader_from_s3(s3_store) -> None:
    write_archive(s3_store, synth_payloads(M, T0, 30))
    md = load_market(s3_store, M, T0, T0 + 11_000)
    assert len(md.states) == 22 and md.problems == []
