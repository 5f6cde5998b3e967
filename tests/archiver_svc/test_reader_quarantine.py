"""Issue 10, defects 5 and 6: the reader validates like the services, quarantines a bad object once (moved
under ``quarantine/`` with a JSON reason), reports it once, and bounds decompression by the window."""

from __future__ import annotations

import json
import tracemalloc
import zlib

import msgpack
import numpy as np
import pytest

from archiver_svc.quarantine import quarantine_key
from archiver_svc.reader import load_market
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import encode_object, object_key
from common.settings import get_settings
from common.store import LocalStore
from tests.archiver_svc.poison import poisoned
from tests.archiver_svc.test_reader import W, write_archive

M = "BTC-15M"
T0 = 1_763_856_000_000


@pytest.fixture()
def window_10s(monkeypatch):
    monkeypatch.setenv("FUSION_ARCHIVE_WINDOW_S", "10")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def bomb(key_ws: int, inflated: int) -> bytes:
    """A gzip object with a valid archive header followed by ``inflated`` zero bytes (~1000:1)."""
    head = msgpack.packb({"v": 1, "kind": "states", "market": M, "window_start_ms": key_ws,
                          "window_end_ms": key_ws + W, "count": 20})  # fmt: skip
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(head)]
    chunk = b"\0" * (1 << 20)
    parts += [c.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + c.flush()


def test_bomb_refused_at_a_bound_proportional_to_the_window(tmp_path, window_10s) -> None:
    store = LocalStore(tmp_path)
    keys = write_archive(store, synth_payloads(M, T0, 60))
    data = bomb(T0 + W, 64 << 20)
    assert len(data) < 100_000
    store.put(keys[1], data)
    tracemalloc.start()
    try:
        md = load_market(store, M, columns_cache=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 10 s window: at most 200 states of 16 KiB each (~3.3 MB) are ever inflated, not 64 MiB (or 1 GiB)
    assert peak < 16 << 20, peak
    assert len(md.states) == 40 and len(md.problems) == 1 and "too large" in md.problems[0]
    assert not store.exists(keys[1]) and store.get(quarantine_key(keys[1], data)) == data


def test_bad_object_quarantined_once_and_reported_once(tmp_path) -> None:
    store = LocalStore(tmp_path)
    keys = write_archive(store, synth_payloads(M, T0, 100))  # 5 windows
    corrupt = b"\x1f\x8b\x08garbage"
    store.put(keys[3], corrupt)
    first = load_market(store, M)
    assert len(first.problems) == 1 and keys[3] in first.problems[0] and len(first.states) == 80
    # moved: the original is gone, the bytes and a JSON reason are under quarantine/
    assert not store.exists(keys[3])
    qk = quarantine_key(keys[3], corrupt)
    assert store.get(qk) == corrupt
    why = json.loads(store.get(f"{qk}.json"))
    assert why["key"] == keys[3] and why["reason"] and why["sha256"]
    q = sorted(o.key for o in store.list("quarantine/"))
    second = load_market(store, M)
    assert second.problems == [] and len(second.states) == 80 and second.skipped == 0  # gone from market-data/
    assert sorted(o.key for o in store.list("quarantine/")) == q


def test_inconsistent_entries_skipped_reported_once_never_unsorted(tmp_path) -> None:
    """Entries with another market, a tick other than their ID (here: duplicating an earlier tick), all-NaN
    or infinite values are skipped; the object's bad entries are quarantined once; ticks come out unique and
    sorted."""
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 40)
    bad = poisoned(M, T0 + 12_100, dup_tick_ms=T0 + 2_000)
    write_archive(store, pairs + [(e, p) for e, p, _ in bad])
    key = object_key("states", M, T0 + W)
    first = load_market(store, M)
    assert first.states.tick_ms.tolist() == [T0 + 500 * i for i in range(40)]
    assert len(first.problems) == 4 and all(key in p for p in first.problems)
    q = sorted(o.key for o in store.list("quarantine/"))
    assert q and all(k.startswith(f"quarantine/{key}") for k in q)
    second = load_market(store, M)
    assert second.problems == [] and second.states.tick_ms.tolist() == first.states.tick_ms.tolist()
    third = load_market(store, M, columns_cache=False)  # no column cache (e.g. an S3 source): counted, not reported
    assert third.problems == [] and third.skipped == 4 and len(third.states) == 40
    assert sorted(o.key for o in store.list("quarantine/")) == q


def test_overlapping_objects_with_conflicting_ticks_load_sorted(tmp_path) -> None:
    """Two objects of other window lengths repeat entries: rows stay unique by entry ID and sorted by tick."""
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 40)
    write_archive(store, pairs)
    store.put(object_key("states", M, T0 + 5_000), encode_object("states", M, T0 + 5_000, 20_000, pairs[10:30]))
    md = load_market(store, M, columns_cache=False)
    assert bool(np.all(np.diff(md.states.tick_ms) > 0)) and len(md.states) == 40


def test_labels_of_another_horizon_set_are_not_mixed_in(tmp_path) -> None:
    from common.schema import Label, encode_label
    from tests.archiver_svc.helpers import label_payload

    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 20)
    write_archive(store, pairs)
    labels = [(e, label_payload(M, int(e.split("-")[0]))) for e, _ in pairs]
    t = int(pairs[3][0].split("-")[0])
    other = Label(M, t, (30, 60, 600), np.full((3, 3), 0.5, np.float32), np.ones(3, np.int8), np.ones(3, np.uint8),
                  np.zeros(3, np.uint8))  # fmt: skip
    labels[3] = (pairs[3][0], encode_label(other))
    write_archive(store, labels, "labels")
    md = load_market(store, M)
    assert md.labels is not None and md.labels.horizons_s == (30, 60, 300) and len(md.labels) == 19
    assert t not in md.labels.tick_ms.tolist() and any("horizons" in p for p in md.problems)
