"""Columnar layout v2: every narrowed column round-trips bit for bit (NaN included), the documented queries give the
landing values, a layout bump rebuilds old days, an unreadable day file is set aside and rebuilt."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archiver_svc import colcodec, columnar
from archiver_svc import compact as compact_mod
from archiver_svc.compact import compact
from archiver_svc.quarantine import quarantine_key
from archiver_svc.reader import load_market
from archiver_svc.synth import synth_states
from common.schema import N_RAW, RAW_FIELDS, RAW_INDEX, encode_state
from common.store import LocalStore
from tests.archiver_svc.helpers import T0, label_payload
from tests.archiver_svc.test_reader import write_archive

M = "BTC-15M"
DAY = "2025-11-23"
LATER = T0 + 3 * 86_400_000


def _bits(x: np.ndarray) -> np.ndarray:
    """float64 bit patterns, NaN canonicalised (a null comes back as the canonical NaN)."""
    return np.where(np.isnan(x), np.nan, x).view(np.int64)


def test_decimal_column_exact_or_refused() -> None:
    x = np.array([0.51, 0.001, 0.999, np.nan, 0.0, 1.0, 0.47])
    arr = colcodec.decimal_column(x, 3, 9)
    assert arr is not None and arr.type == pa.decimal32(9, 3) and arr.null_count == 1
    assert np.array_equal(_bits(colcodec.to_numpy(arr)), _bits(x))
    assert np.array_equal(colcodec.to_numpy(arr, np.float32), x.astype(np.float32), equal_nan=True)
    assert colcodec.decimal_column(np.array([0.1 + 0.2]), 3, 9) is None  # an ulp off 0.3: stays float64
    assert colcodec.decimal_column(np.array([0.1 + 0.2]), 1, 18) is None
    assert colcodec.decimal_column(np.array([-0.0, 1.0]), 3, 9) is None  # the sign of zero would be lost
    assert colcodec.decimal_column(np.array([1e7]), 3, 9) is None  # beyond 9 digits
    assert colcodec.decimal_column(np.array([np.inf]), 2, 18) is None
    rng = np.random.default_rng(1)
    cents = np.round(95_000 + np.cumsum(rng.normal(0, 3, 5000)), 2)
    cents[::97] = np.nan
    arr = colcodec.decimal_column(cents, 2, 18)
    assert arr is not None and arr.type == pa.decimal64(18, 2)
    assert np.array_equal(_bits(colcodec.to_numpy(arr)), _bits(cents))
    none = colcodec.decimal_column(np.full(4, np.nan), 3, 9)  # all unknown: all null
    assert none is not None and none.null_count == 4 and np.isnan(colcodec.to_numpy(none)).all()
    sliced = colcodec.to_numpy(arr.slice(3, 200))  # an offset into the buffers (a row group's slice)
    assert np.array_equal(_bits(sliced), _bits(cents[3:203]))


def _payloads(n: int = 200, tweak=None) -> list[tuple[str, bytes]]:
    states = synth_states(M, T0 + 1_000, n)
    rng = np.random.default_rng(7)
    for i, s in enumerate(states):  # every raw field unknown (NaN) somewhere, never a whole row
        for j in rng.choice(N_RAW, 5, replace=False):
            if j != RAW_INDEX["bn_last_px"]:
                s.raw[j] = np.nan
        if tweak is not None:
            tweak(i, s)
    return [(f"{s.tick_ms}-0", encode_state(s)) for s in states]


def test_every_raw_field_round_trips_bit_for_bit(tmp_path) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, _payloads())
    before = load_market(store, M, labels=False)
    assert compact(store, kinds=("states",), now_ms=LATER).rows == 200
    schema = pq.read_schema(tmp_path / columnar.day_key("states", M, DAY))
    kinds = {n: str(schema.field(n).type) for n in RAW_FIELDS}
    assert kinds["up_ask_px_0"] == "decimal32(9, 3)" and kinds["up_bid_sz_0"] == "decimal32(9, 2)"
    assert kinds["bn_last_px"] == "decimal64(18, 2)" and kinds["pm_end_s"] == "decimal64(18, 3)"
    assert kinds["age_poly_ms"] == "decimal64(18, 0)"
    assert kinds["bn_bid"] == "decimal64(18, 2)"  # synth rounds after the arithmetic, as a cent-tick book is
    assert kinds["bn_buy_notional"] == "double"  # decayed sums of qty x price: off the cent grid, kept as is
    assert kinds["bn_bid_sz"] == kinds["bn_ask_sz"] == "decimal64(18, 5)"  # BTCUSDT's lot
    assert sum(k.startswith("decimal") for k in kinds.values()) >= 55
    after = load_market(store, M, labels=False)
    assert np.isnan(before.states.raw).any(axis=0).sum() == N_RAW - 1  # every column but one had NaNs to carry
    assert np.array_equal(_bits(after.states.raw), _bits(before.states.raw))
    assert np.array_equal(after.states.features, before.states.features)


def test_binance_sizes_take_the_finest_exact_scale_or_stay_float64(tmp_path) -> None:
    def tweak(i: int, s) -> None:
        if i == 150:
            s.raw[RAW_INDEX["bn_bid_sz"]] = 0.12345678  # a lot of 1e-8: scale 8
            s.raw[RAW_INDEX["bn_ask_sz"]] = 1 / 3  # on no grid: float64

    store = LocalStore(tmp_path)
    write_archive(store, _payloads(tweak=tweak))
    before = load_market(store, M, labels=False)
    compact(store, kinds=("states",), now_ms=LATER)
    schema = pq.read_schema(tmp_path / columnar.day_key("states", M, DAY))
    assert str(schema.field("bn_bid_sz").type) == "decimal64(18, 8)" and str(schema.field("bn_ask_sz").type) == "double"
    t = pq.read_table(tmp_path / columnar.day_key("states", M, DAY), columns=["bn_bid_sz", "bn_ask_sz"])
    for c in ("bn_bid_sz", "bn_ask_sz"):
        assert np.array_equal(_bits(colcodec.to_numpy(t.column(c))), _bits(before.states.raw[:, RAW_INDEX[c]])), c


def test_an_off_grid_value_in_a_later_row_group_keeps_the_column_exact(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(compact_mod, "CHUNK_WINDOWS", 2)  # several row groups from 11 windows

    def tweak(i: int, s) -> None:
        if i == 190:  # in the last window: 0.1 + 0.2 is not the float64 of 0.3
            s.raw[RAW_INDEX["up_ask_px_0"]] = 0.1 + 0.2

    store = LocalStore(tmp_path)
    write_archive(store, _payloads(tweak=tweak))
    before = load_market(store, M, labels=False)
    compact(store, kinds=("states",), now_ms=LATER)
    f = pq.ParquetFile(tmp_path / columnar.day_key("states", M, DAY))
    assert f.schema_arrow.field("up_ask_px_0").type == pa.float64()  # the day was written in one piece
    after = load_market(store, M, labels=False)
    assert np.array_equal(_bits(after.states.raw), _bits(before.states.raw))
    monkeypatch.undo()


def test_streamed_row_groups_equal_one_piece(tmp_path, monkeypatch) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, _payloads())
    before = load_market(store, M, labels=False)
    monkeypatch.setattr(compact_mod, "CHUNK_WINDOWS", 3)
    compact(store, kinds=("states",), now_ms=LATER)
    assert pq.ParquetFile(tmp_path / columnar.day_key("states", M, DAY)).metadata.num_row_groups == 4
    after = load_market(store, M, labels=False)
    assert np.array_equal(_bits(after.states.raw), _bits(before.states.raw))
    assert list(after.states.slugs) == list(before.states.slugs)


def test_documented_queries_give_the_landing_values(tmp_path) -> None:
    duckdb = pytest.importorskip("duckdb")
    store = LocalStore(tmp_path)
    pairs = _payloads()
    write_archive(store, pairs)
    write_archive(store, [(e, label_payload(M, int(e.split("-")[0]))) for e, _ in pairs], "labels")
    landing = load_market(store, M, labels=False).states.raw
    compact(store, now_ms=LATER)
    cols = ["up_ask_px_0", "up_bid_sz_0", "bn_last_px", "pm_end_s", "age_poly_ms", "bn_bid"]
    # docs/columnar.md: DuckDB reads a DECIMAL as its decimal value; CAST(... AS DOUBLE) is the state's float64
    sel = ", ".join(f"CAST(s.{c} AS DOUBLE) AS {c}" for c in cols)
    q = f"""
        SELECT s.tick_ms, {sel}, l.reward_60s_buy_up
        FROM read_parquet('{tmp_path}/columnar/states/{M}/*.parquet', union_by_name = true) s
        JOIN read_parquet('{tmp_path}/columnar/labels/{M}/*.parquet') l USING (tick_ms)
        WHERE l.valid_60s = 1 ORDER BY s.tick_ms
    """
    got = duckdb.sql(q).fetchnumpy()
    assert len(got["tick_ms"]) == 200 and abs(float(got["reward_60s_buy_up"][0]) - 0.01) < 1e-6
    for c in cols:  # NULL (a DECIMAL's "not known") comes back masked: NaN
        vals = np.ma.filled(np.ma.asarray(got[c]).astype(np.float64), np.nan)
        assert np.array_equal(_bits(vals), _bits(landing[:, RAW_INDEX[c]])), c
    row = duckdb.sql(f"SELECT up_ask_px_0 FROM read_parquet('{tmp_path}/columnar/states/{M}/*.parquet') "
                     "WHERE up_ask_px_0 IS NOT NULL ORDER BY tick_ms LIMIT 1").fetchall()  # fmt: skip
    first = landing[~np.isnan(landing[:, RAW_INDEX["up_ask_px_0"]]), RAW_INDEX["up_ask_px_0"]][0]
    assert float(row[0][0]) == first  # the DECIMAL value itself is the price (e.g. 0.510)
    # pyarrow: the documented exact conversion
    t = pq.read_table(tmp_path / "columnar/states", columns=["tick_ms", *cols])
    for c in cols:
        assert np.array_equal(_bits(colcodec.to_numpy(t.column(c))), _bits(landing[:, RAW_INDEX[c]])), c


def _as_layout_1(store: LocalStore, tmp_path) -> None:
    """Rewrite the compacted day as layout 1 wrote it (every raw field float64, NaN for not known), manifest v1."""
    pkey, mkey = columnar.day_key("states", M, DAY), columnar.day_key("states", M, DAY, columnar.MANIFEST)
    t = pq.read_table(tmp_path / pkey)
    cols = {n: (pa.array(colcodec.to_numpy(t.column(n))) if n in RAW_FIELDS else t.column(n)) for n in t.column_names}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    man = json.loads(store.get(mkey))
    man.update(version=1, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    store.put(pkey, data)
    store.put(mkey, columnar.dumps(man))


def test_a_layout_bump_rebuilds_old_days_and_reads_them_meanwhile(tmp_path) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, _payloads())
    before = load_market(store, M, labels=False)
    compact(store, kinds=("states",), now_ms=LATER)
    _as_layout_1(store, tmp_path)
    pkey, mkey = columnar.day_key("states", M, DAY), columnar.day_key("states", M, DAY, columnar.MANIFEST)
    old = store.get(pkey)
    md = load_market(store, M, labels=False)  # a layout-1 day reads the same values
    assert np.array_equal(_bits(md.states.raw), _bits(before.states.raw)) and not md.problems
    res = compact(store, kinds=("states",), now_ms=LATER)
    assert res.written == [f"states/{M}/{DAY}"]  # rewritten in the current layout
    assert json.loads(store.get(mkey))["version"] == columnar.COLUMNAR_VERSION and store.get(pkey) != old
    assert pq.read_schema(tmp_path / pkey).field("up_ask_px_0").type == pa.decimal32(9, 3)
    assert compact(store, kinds=("states",), now_ms=LATER).written == []  # idempotent again
    _as_layout_1(store, tmp_path)  # a layout-1 day whose windows are gone (retention) stays readable
    for o in list(store.list("market-data/")):
        store.delete(o.key)
    md = load_market(store, M, labels=False)
    assert np.array_equal(_bits(md.states.raw), _bits(before.states.raw))


def test_an_unreadable_day_file_is_set_aside_and_rebuilt(tmp_path) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, _payloads())
    compact(store, kinds=("states",), now_ms=LATER)
    pkey = columnar.day_key("states", M, DAY)
    mkey = columnar.day_key("states", M, DAY, columnar.MANIFEST)
    good = store.get(pkey)
    bad = good[: len(good) // 2] + bytes(len(good) - len(good) // 2)  # same size: the manifest still matches
    store.put(pkey, bad)
    md = load_market(store, M, labels=False)
    assert len(md.states) == 200  # from the windows
    assert not store.exists(pkey) and not store.exists(mkey) and store.get(quarantine_key(pkey, bad)) == bad
    assert compact(store, kinds=("states",), now_ms=LATER).written == [f"states/{M}/{DAY}"]
    assert store.get(pkey) == good  # rebuilt byte for byte
    store.put(mkey, b"{not json")  # a corrupt manifest: the day is not current, so it is rebuilt
    assert compact(store, kinds=("states",), now_ms=LATER).written == [f"states/{M}/{DAY}"]
    assert json.loads(store.get(mkey))["rows"] == 200


def test_an_unreadable_day_without_windows_is_left_in_place(tmp_path) -> None:
    """Retention deleted the windows: the day file is the only copy, so it is never moved away."""
    store = LocalStore(tmp_path)
    write_archive(store, _payloads())
    compact(store, kinds=("states",), now_ms=LATER)
    for o in list(store.list("market-data/")):
        store.delete(o.key)
    pkey = columnar.day_key("states", M, DAY)
    good = store.get(pkey)
    assert len(load_market(store, M, labels=False).states) == 200  # read from Parquet alone
    store.put(pkey, good[:100])
    assert len(load_market(store, M, labels=False).states) == 0  # unreadable: nothing to load, never a crash
    assert store.get(pkey) == good[:100] and store.exists(columnar.day_key("states", M, DAY, columnar.MANIFEST))
