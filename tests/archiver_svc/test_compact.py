"""Compaction: closed days -> Parquet + manifest, idempotent, read back equal; queryable by duckdb/pyarrow."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from archiver_svc import columnar
from archiver_svc.compact import compact, main
from archiver_svc.rawcols import TRAIN_FIELDS, RawColumns
from archiver_svc.reader import load_market
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import object_key
from common.features import FEATURE_SET
from common.schema import RAW_INDEX, decode_state
from common.store import LocalStore
from fusion.cli import COMMANDS
from tests.archiver_svc.helpers import T0, label_payload
from tests.archiver_svc.test_reader import write_archive

M = "BTC-15M"
DAY = "2025-11-23"  # the UTC day of T0
LATER = T0 + 3 * 86_400_000


def _archive(store: LocalStore, n: int = 200) -> list[tuple[str, bytes]]:
    pairs = synth_payloads(M, T0 + 1_000, n)
    write_archive(store, pairs)
    write_archive(store, [(e, label_payload(M, int(e.split("-")[0]))) for e, _ in pairs], "labels")
    return pairs


def test_compact_writes_manifest_and_reads_back_identical(tmp_path) -> None:
    store = LocalStore(tmp_path)
    _archive(store)
    before = load_market(store, M)
    res = compact(store, now_ms=LATER)
    assert sorted(res.written) == [f"labels/{M}/{DAY}", f"states/{M}/{DAY}"] and res.rows == 400
    key = columnar.day_key("states", M, DAY)
    data = store.get(key)
    man = json.loads(store.get(columnar.day_key("states", M, DAY, columnar.MANIFEST)))
    assert man["rows"] == 200 and man["sha256"] == hashlib.sha256(data).hexdigest()
    assert man["first_tick_ms"] == T0 + 1_000 and man["last_tick_ms"] == T0 + 1_000 + 199 * 500
    assert man["n_gaps"] == 0 and len(man["sources"]) == 11 and man["feature_set"] == FEATURE_SET
    after = load_market(store, M)
    assert np.array_equal(after.states.raw, before.states.raw, equal_nan=True)
    assert np.array_equal(after.states.features, before.states.features)
    assert after.states.slugs == before.states.slugs and np.array_equal(after.states.tick_ms, before.states.tick_ms)
    assert after.labels is not None and before.labels is not None
    assert np.array_equal(after.labels.rewards, before.labels.rewards)
    assert after.labels.horizons_s == before.labels.horizons_s
    # proof the columnar file is what was read: break a window; the reader still loads from Parquet
    again = compact(store, now_ms=LATER)
    assert again.written == [] and len(again.skipped) == 2  # idempotent: skipped by manifest
    # forced rewrite gives identical bytes
    store.delete(columnar.day_key("states", M, DAY, columnar.MANIFEST))
    compact(store, now_ms=LATER)
    assert store.get(key) == data


def test_open_day_is_not_compacted_and_changed_window_invalidates(tmp_path) -> None:
    store = LocalStore(tmp_path)
    pairs = _archive(store)
    assert compact(store, now_ms=T0 + 3_600_000).written == []  # the day is still open
    compact(store, now_ms=LATER)
    # a window changes after compaction (e.g. rebuilt with fewer entries): the manifest is stale -> windows read
    write_archive(store, pairs[:10])
    md = load_market(store, M)
    assert len(md.states) == 192  # from the windows: the rewritten first window holds 10 of its 18 states
    store.put(object_key("states", M, T0), b"not gzip")  # now a corrupt window: quarantined, never a crash
    md = load_market(store, M)
    assert any("corrupt" in p or "gzip" in p for p in md.problems)
    assert len(md.states) == 200 - 18  # the first window (ticks 1.0..9.5 s) is gone, the rest loads
    res = compact(store, now_ms=LATER)
    assert f"states/{M}/{DAY}" in res.written
    assert json.loads(store.get(columnar.day_key("states", M, DAY, columnar.MANIFEST)))["rows"] == 182


def test_trainer_columns_narrow_and_exact(tmp_path) -> None:
    store = LocalStore(tmp_path)
    _archive(store)
    full = load_market(store, M, labels=False)
    for when in ("windows", "parquet"):
        if when == "parquet":
            compact(store, now_ms=LATER)
        md = load_market(store, M, labels=False, raw_fields=TRAIN_FIELDS)
        raw = md.states.raw
        assert isinstance(raw, RawColumns) and raw.cols["up_ask_px_0"].dtype == np.float32
        assert raw.cols["pm_end_s"].dtype == np.float64
        for f in TRAIN_FIELDS:  # float32 prices on the 0.001 grid come back bit for bit
            assert np.array_equal(raw[:, RAW_INDEX[f]], full.states.raw[:, RAW_INDEX[f]], equal_nan=True), f
        with pytest.raises(KeyError, match="bn_bid"):
            raw[:, RAW_INDEX["bn_bid"]]


def test_documented_queries_run(tmp_path) -> None:
    """The queries of docs/columnar.md, with pyarrow and (when installed) duckdb."""
    store = LocalStore(tmp_path)
    _archive(store)
    compact(store, now_ms=LATER)
    t = pq.read_table(tmp_path / "columnar/states", columns=["tick_ms", "up_ask_px_0"])
    assert t.num_rows == 200
    duckdb = pytest.importorskip("duckdb")
    q = f"""
        SELECT s.tick_ms, s.up_ask_px_0, l.reward_60s_buy_up
        FROM read_parquet('{tmp_path}/columnar/states/{M}/*.parquet') s
        JOIN read_parquet('{tmp_path}/columnar/labels/{M}/*.parquet') l USING (tick_ms)
        WHERE l.valid_60s = 1 ORDER BY s.tick_ms
    """
    rows = duckdb.sql(q).fetchall()
    assert len(rows) == 200 and rows[0][0] == T0 + 1_000 and abs(rows[0][2] - 0.01) < 1e-6


def test_cli_registered_and_runs(tmp_path, monkeypatch, capsys) -> None:
    assert COMMANDS["compact"][0] == "archiver_svc.compact"
    _archive(LocalStore(tmp_path))
    assert main(["--store", f"file://{tmp_path}", "--market", M, "--day", "2000-01-01"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == []


def test_narrowing_is_exact_or_refused() -> None:
    from archiver_svc.rawcols import narrow, widen

    px = np.array([0.001, 0.53, 1 - 0.53, 0.999, np.nan, 0.0])  # 1 - 0.53: a few ulps off the grid value 0.47
    held = narrow("up_ask_px_0", px)
    assert held.dtype == np.float32
    assert np.array_equal(widen("up_ask_px_0", held), np.round(px, 3), equal_nan=True)
    off = np.array([0.5, 0.5005])  # off the 0.001 grid: stays float64, unchanged
    assert narrow("up_ask_px_0", off).dtype == np.float64
    t = np.array([1.763856e9 + 0.5])  # unix seconds: never float32 (it steps by 128 s there)
    assert narrow("pm_end_s", t).dtype == np.float64


def test_unreadable_columnar_file_falls_back_to_windows(tmp_path) -> None:
    store = LocalStore(tmp_path)
    _archive(store)
    compact(store, now_ms=LATER)
    store.put(columnar.day_key("states", M, DAY), b"PAR1 not parquet")  # corrupt, manifest still current
    md = load_market(store, M, raw_fields=TRAIN_FIELDS)
    assert len(md.states) == 200 and md.labels is not None and len(md.labels) == 200
    store.delete(columnar.day_key("states", M, DAY))  # and a missing file
    assert len(load_market(store, M).states) == 200


def test_cli_refuses_a_bad_market_name(tmp_path, capsys) -> None:
    assert main(["--store", f"file://{tmp_path}", "--market", "../etc"]) == 2
    assert "compact" in capsys.readouterr().err


def test_origins_with_compacted_days(tmp_path) -> None:
    """Compaction covers the recorded origin only; imported windows are read from their windows, and ``both``
    merges the two (a recorded state wins a shared tick) with the trainer's narrow raw columns."""
    from archiver_svc.origins import imported_view

    store = LocalStore(tmp_path)
    rec = _archive(store, 100)  # ticks T0+1000 .. T0+50500
    imp = synth_payloads(M, T0 + 41_000, 60, seed=7)  # overlaps the last 20 recorded ticks
    write_archive(imported_view(store), imp)
    res = compact(store, now_ms=LATER)
    assert not any(k.startswith("imported/") for k in res.written) and not list(store.list("imported/columnar/"))
    assert list(store.list("columnar/states/"))
    only_imp = load_market(store, M, origin="imported", raw_fields=TRAIN_FIELDS)
    assert len(only_imp.states) == 60 and only_imp.states.tick_ms[0] == T0 + 41_000
    both = load_market(store, M, origin="both", raw_fields=TRAIN_FIELDS)
    ticks = both.states.tick_ms
    assert bool((ticks[1:] > ticks[:-1]).all()) and len(both.states) == 100 + 60 - 20
    assert isinstance(both.states.raw, RawColumns) and len(both.states.slugs) == len(ticks)
    f = TRAIN_FIELDS[0]
    want = {int(e.split("-")[0]): decode_state(b).raw[RAW_INDEX[f]] for e, b in imp + rec}  # recorded last: wins
    got = both.states.raw[:, RAW_INDEX[f]]
    assert np.allclose(got, [want[int(t)] for t in ticks], equal_nan=True)


def test_days_in_flight_write_the_same_files_in_the_same_order(tmp_path) -> None:
    one, two = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    for store in (one, two):
        for m in (M, "ETH-15M"):
            pairs = synth_payloads(m, T0 + 1_000, 300)
            write_archive(store, pairs, market=m)
            write_archive(store, [(e, label_payload(m, int(e.split("-")[0]))) for e, _ in pairs], "labels", market=m)
    a, b = compact(one, now_ms=LATER), compact(two, now_ms=LATER, days_in_flight=3)
    assert a.written == b.written and len(a.written) == 4 and a.rows == b.rows == 1200
    for k in a.written:
        kind, market, day = k.split("/")
        assert one.get(columnar.day_key(kind, market, day)) == two.get(columnar.day_key(kind, market, day))


def test_a_pass_over_unchanged_days_costs_listings_not_a_get_per_day(tmp_path) -> None:
    from archiver_svc.compact import ManifestCache

    calls: list[str] = []

    class Counting(LocalStore):
        def get(self, key: str) -> bytes:
            calls.append(f"get {key}")
            return super().get(key)

        def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
            calls.append(f"list {prefix}")
            return super().list(prefix)

    store = Counting(tmp_path)
    for d in range(4):  # four days of one market
        pairs = synth_payloads(M, T0 + d * 86_400_000 + 1_000, 50)
        write_archive(store, pairs)
    cache = ManifestCache()
    import archiver_svc.compact as compact_mod

    old, compact_mod.MANIFESTS = compact_mod.MANIFESTS, cache
    try:
        assert len(compact(store, kinds=("states",), now_ms=LATER + 4 * 86_400_000).written) == 4
        calls.clear()
        compact(store, kinds=("states",), now_ms=LATER + 4 * 86_400_000)
        assert [c for c in calls if c.startswith("get")] == []  # what it wrote, it knows
        compact_mod.MANIFESTS = ManifestCache()  # a restarted compactor
        calls.clear()
        again = compact(store, kinds=("states",), now_ms=LATER + 4 * 86_400_000)
        first_gets = [c for c in calls if c.startswith("get")]
        calls.clear()
        third = compact(store, kinds=("states",), now_ms=LATER + 4 * 86_400_000)
    finally:
        compact_mod.MANIFESTS = old
    assert again.written == [] == third.written and len(third.skipped) == 4
    assert len(first_gets) == 4  # after a restart each manifest is read once, then known by its size
    # the archive's markets, the market's columnar files, its windows: one listing each
    assert [c for c in calls if c.startswith("get")] == [] and len(calls) <= 4, calls
    # a changed day (a window added) is seen and rewritten
    write_archive(store, synth_payloads(M, T0 + 2 * 86_400_000 + 3_600_000, 5))
    assert compact(store, kinds=("states",), now_ms=LATER + 4 * 86_400_000).written == ["states/BTC-15M/2025-11-25"]


def test_a_stray_key_in_a_foreign_day_folder_never_stops_a_pass(tmp_path) -> None:
    store = LocalStore(tmp_path)
    _archive(store)
    good = next(o.key for o in store.list(f"market-data/{M}/"))
    data = store.get(good)
    store.put(f"market-data/{M}/garbage/{good.rsplit('/', 1)[1]}", data)  # not a day
    store.put(f"market-data/{M}/2025-11-30/{good.rsplit('/', 1)[1]}", data)  # a day that is not its window's
    later = synth_payloads(M, T0 + 86_400_000 + 1_000, 100)  # and a real next day holding a stray window too
    later_keys = write_archive(store, later)
    store.put(f"market-data/{M}/2025-11-24/{good.rsplit('/', 1)[1]}", data)
    res = compact(store, now_ms=LATER + 86_400_000)
    assert sorted(res.written) == [f"labels/{M}/{DAY}", f"states/{M}/{DAY}", f"states/{M}/2025-11-24"]
    assert res.rows == 500  # the stray window's states are in neither day
    man = json.loads(store.get(columnar.day_key("states", M, "2025-11-24", columnar.MANIFEST)))
    assert man["rows"] == 100 and sorted(k for k, _ in man["sources"]) == sorted(later_keys)
    assert compact(store, now_ms=LATER + 86_400_000).written == []  # and the next pass finds every day current


def test_a_day_that_fails_is_reported_and_the_other_days_go_on(tmp_path) -> None:
    broken = {f"columnar/states/{M}/2025-11-24.parquet"}

    class Flaky(LocalStore):
        def put(self, key: str, data: bytes) -> None:
            if key in broken:
                raise OSError(28, "No space left on device")
            super().put(key, data)

    store = Flaky(tmp_path)
    for d in range(3):
        write_archive(store, synth_payloads(M, T0 + d * 86_400_000 + 1_000, 50))
    res = compact(store, kinds=("states",), now_ms=LATER + 3 * 86_400_000)
    assert res.failed == [f"states/{M}/2025-11-24"] and "No space left" in res.problems[0]
    assert res.written == [f"states/{M}/{DAY}", f"states/{M}/2025-11-25"]  # the day after it too
    broken.clear()
    assert compact(store, kinds=("states",), now_ms=LATER + 3 * 86_400_000).written == [f"states/{M}/2025-11-24"]
