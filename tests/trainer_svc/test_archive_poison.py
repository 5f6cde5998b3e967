"""Issue 10, defect 5: training on an archive that holds poisoned entries and a corrupt object completes.

Before: one schema-valid state whose payload tick differs from its entry ID made every ``fusion train`` of
the market die with ``states must be sorted by tick_ms with unique ticks``."""

from __future__ import annotations

import numpy as np
import pytest

from archiver_svc.windows import encode_object, object_key
from common.features import FEATURE_SET
from common.schema import PolymarketWindow, State, encode_state
from common.store import LocalStore
from tests.archiver_svc.helpers import label_payload
from tests.archiver_svc.poison import poisoned
from trainer_svc.pipeline import JobParams, load_data, run_training
from trainer_svc.synthetic import generate

M = "POISON-15M"
W = 600_000


def poisoned_archive(tmp_path, n: int) -> tuple[LocalStore, list[str], int]:
    """A local archive of ``n`` synthetic states of M with four poisoned entries (one duplicating the first
    tick) in one object and a corrupt object (the 8th window)."""
    store = LocalStore(tmp_path / "store")
    cols = generate(n_states=n)
    wins: dict[int, dict[str, bytes]] = {}
    for i in range(len(cols)):
        t = int(cols.tick_ms[i])
        w0 = t // 900_000 * 900_000
        s = State(M, t, cols.raw[i], cols.features[i], FEATURE_SET, int(cols.flags[i]),
                  PolymarketWindow(cols.slugs[i], "0x1", "1", "2", w0, w0 + 900_000))  # fmt: skip
        wins.setdefault(t - t % W, {})[f"{t}-0"] = encode_state(s)
    t_bad = int(cols.tick_ms[3000]) + 100  # between two ticks, duplicating the first tick of the archive
    for eid, payload, _ in poisoned(M, t_bad, dup_tick_ms=int(cols.tick_ms[0])):
        wins[t_bad - t_bad % W][eid] = payload
    keys = []
    for ws, entries in sorted(wins.items()):
        keys.append(object_key("states", M, ws))
        store.put(keys[-1], encode_object("states", M, ws, W, entries))
    store.put(keys[7], b"\x1f\x8b\x08 not gzip")
    return store, keys, len(cols)


def test_loading_a_poisoned_archive_for_training(tmp_path) -> None:
    """The step that crashed (labelling the loaded states) alone, fast."""
    store, keys, n = poisoned_archive(tmp_path, 18_000)
    states, labels, info = load_data(JobParams(market=M, store_url=store.url), (30, 60, 300))
    assert info["n_states"] == n - 1200 and info["problems"] == 5 and bool(np.all(np.diff(states.tick_ms) > 0))
    assert np.array_equal(labels.tick_ms, states.tick_ms)  # labelled row for row (the step that crashed)
    assert any(k.key.startswith(f"quarantine/{keys[7]}") for k in store.list("quarantine/"))
    # a second job reads the same archive: nothing new to report, the same rows
    again, _, info2 = load_data(JobParams(market=M, store_url=store.url), (30, 60, 300))
    assert info2["problems"] == 0 and np.array_equal(again.tick_ms, states.tick_ms)


def test_archived_labels_that_do_not_align_are_recomputed(tmp_path) -> None:
    """As many archived labels as states, but not for the same ticks (one label missing, one for a state of the
    quarantined object): the labels are recomputed instead of failing the job."""
    store, keys, n = poisoned_archive(tmp_path, 18_000)
    states, _, _ = load_data(JobParams(market=M, store_url=store.url), (30, 60, 300))
    ticks = states.tick_ms.tolist()
    lticks = ticks[:100] + ticks[101:] + [int(keys[7].rsplit("/", 1)[1].split(".")[0]) + 500]
    wins: dict[int, dict[str, bytes]] = {}
    for t in sorted(lticks):
        wins.setdefault(t - t % W, {})[f"{t}-0"] = label_payload(M, t)
    for ws, entries in wins.items():
        store.put(object_key("labels", M, ws), encode_object("labels", M, ws, W, entries))
    states2, labels, info = load_data(JobParams(market=M, store_url=store.url), (30, 60, 300))
    assert len(labels) == len(states2) == len(states) and np.array_equal(labels.tick_ms, states2.tick_ms)
    assert info["labels_source"] != "archive"


@pytest.mark.slow
def test_training_on_a_poisoned_archive_completes(tmp_path) -> None:
    store, keys, n = poisoned_archive(tmp_path, 28_800)
    out = run_training(JobParams(market=M, store_url=store.url, promote=False, overrides={"epochs": 1}))
    assert out["data"]["n_states"] == n - 1200 and out["data"]["problems"] == 5
    assert out["version"] and store.exists(f"models/{M}/{out['version']}/meta.json")
