"""Issue 14: an archive that holds states of feature sets ``market-v2`` and ``market-v3`` (an observer upgraded
mid-way, or an import written before the upgrade) trains on one feature set: the current one, recomputed from
each state's raw fields on load. Before: the trainer took each state's stored features, so the v2 windows
(17 features, v2's meaning) were dropped as "another shape" inside a mixed object and, across objects, fed the
policy features the trader never computes."""

from __future__ import annotations

import numpy as np

from archiver_svc.reader import load_market
from archiver_svc.windows import encode_object, object_key
from common.features import FEATURE_SET, market_features
from common.schema import PolymarketWindow, State, encode_state
from common.store import LocalStore
from trainer_svc.pipeline import JobParams, load_data
from trainer_svc.synthetic import generate

M = "MIXED-15M"
W = 600_000
V2_WIDTH = 17


def mixed_archive(tmp_path, n: int) -> tuple[LocalStore, np.ndarray, object]:
    """Synthetic states of M: the first half stored as feature set market-v2 (17 made-up features), the rest as
    the current set; the object holding the switch has both. Returns (store, is_v2 per state, the columns)."""
    store = LocalStore(tmp_path / "store")
    cols = generate(n_states=n)
    v2 = np.arange(len(cols)) < len(cols) // 2
    rng = np.random.default_rng(3)
    wins: dict[int, dict[str, bytes]] = {}
    for i in range(len(cols)):
        t = int(cols.tick_ms[i])
        w0 = t // 900_000 * 900_000
        pm = PolymarketWindow(cols.slugs[i], "0x1", "1", "2", w0, w0 + 900_000)
        if v2[i]:
            s = State(M, t, cols.raw[i], rng.uniform(-1, 1, V2_WIDTH).astype(np.float32), "market-v2",
                      int(cols.flags[i]), pm)  # fmt: skip
        else:
            s = State(M, t, cols.raw[i], cols.features[i], FEATURE_SET, int(cols.flags[i]), pm)
        wins.setdefault(t - t % W, {})[f"{t}-0"] = encode_state(s)
    for ws, entries in sorted(wins.items()):
        store.put(object_key("states", M, ws), encode_object("states", M, ws, W, entries))
    return store, v2, cols


def test_an_archive_of_two_feature_sets_reads_back_as_the_current_one(tmp_path) -> None:
    store, v2, cols = mixed_archive(tmp_path, 6000)
    switch = int(cols.tick_ms[int(v2.sum())])
    assert int(cols.tick_ms[int(v2.sum()) - 1]) // W == switch // W  # one object holds both sets
    md = load_market(store, M)
    assert md.problems == [] and len(md.states) == len(cols)  # nothing dropped as "another shape"
    want = market_features(md.states.raw, md.states.tick_ms, md.states.flags, tick_s=0.5)
    assert md.states.features.shape == want.shape
    assert np.array_equal(md.states.features, want)
    assert np.array_equal(md.states.features[~v2], cols.features[~v2])  # current-set states: as stored


def test_training_data_of_a_mixed_archive_has_current_features_only(tmp_path) -> None:
    store, v2, cols = mixed_archive(tmp_path, 6000)
    states, labels, info = load_data(JobParams(market=M, store_url=store.url), (30, 60, 300))
    assert len(states) == len(cols) and info["problems"] == 0
    want = market_features(cols.raw, cols.tick_ms, cols.flags, tick_s=0.5)
    assert np.array_equal(states.features, want)
    assert labels is not None and len(labels) == len(states)


def test_a_day_compacted_under_another_feature_set_is_read_from_its_windows(tmp_path) -> None:
    """A day ``fusion compact``ed before the feature set changed (its manifest says market-v2, its Parquet holds v2
    features) is read from its windows, recomputed, instead of mixing v2 features in."""
    import hashlib
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from archiver_svc import columnar
    from archiver_svc.compact import compact
    from archiver_svc.rawcols import TRAIN_FIELDS

    store, _, cols = mixed_archive(tmp_path, 3000)
    day = np.datetime_as_string(np.datetime64(int(cols.tick_ms[0]), "ms"), "D")
    compact(store, now_ms=int(cols.tick_ms[-1]) + 3 * 86_400_000, kinds=("states",))
    key, mkey = columnar.day_key("states", M, day), columnar.day_key("states", M, day, columnar.MANIFEST)
    t = pq.read_table(store._path(key))
    for name in [c for c in t.column_names if c.startswith("f_")]:  # what a v2 compaction held: other values
        t = t.set_column(t.column_names.index(name), name, pa.array(np.full(t.num_rows, 0.25, np.float32)))
    pq.write_table(t, store._path(key))
    man = json.loads(store.get(mkey))
    data = store.get(key)
    man.update(feature_set="market-v2", sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    store.put(mkey, json.dumps(man).encode())
    want = market_features(cols.raw, cols.tick_ms, cols.flags, tick_s=0.5)
    for fields in (None, TRAIN_FIELDS):
        md = load_market(store, M, labels=False, raw_fields=fields)
        assert len(md.states) == len(cols) and np.array_equal(md.states.features, want)
