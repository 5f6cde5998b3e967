"""A trader's records in the columnar archive: one Parquet file per trader and day, typed columns plus the whole
record as JSON, queryable with DuckDB next to the states (docs/columnar.md)."""

from __future__ import annotations

import json
import math

import msgpack
import pyarrow.parquet as pq
import pytest

from archiver_svc import columnar
from archiver_svc.coltrades import FIELDS, record_json, trades_table
from archiver_svc.compact import compact, main
from archiver_svc.synth import synth_payloads, synth_states
from common.store import LocalStore
from tests.archiver_svc.helpers import T0
from tests.archiver_svc.test_reader import write_archive
from trader_svc.paper import BUY_DOWN, BUY_UP, HOLD, PaperConfig, PaperEngine

M = "BTC-15M"
T = "paper-1"
DAY = "2025-11-23"
LATER = T0 + 3 * 86_400_000


def _records() -> list[dict[str, object]]:
    """What a trader records over 400 ticks: decisions, the paper engine's fills and refusals, a swap."""
    eng = PaperEngine(PaperConfig(), [M])
    out: list[dict[str, object]] = [{"type": "swap", "from": None, "to": "v1", "tick": T0, "swap_ns": 1200}]
    for i, s in enumerate(synth_states(M, T0 + 1_000, 400)):
        a = (BUY_UP, HOLD, HOLD, BUY_DOWN)[(i // 25) % 4]
        out.append({"type": "decision", "market": M, "tick": s.tick_ms, "a": a, "model": "v1", "pnl_frac": 0.1})
        out += eng.decide(M, s.tick_ms, a, s.raw, s.flags, "v1")
    return [{"v": 1, "trader": T, **r} for r in out]


def _archive(store: LocalStore, recs: list[dict[str, object]]) -> list[str]:
    ids = [f"{T0 + 1_000 + 500 * i}-{i % 3}" for i in range(len(recs))]
    write_archive(store, [(e, msgpack.packb(r)) for e, r in zip(ids, recs, strict=True)], "trades", market=T)
    return ids


def test_trades_compacted_and_queried_with_duckdb_next_to_the_states(tmp_path) -> None:
    duckdb = pytest.importorskip("duckdb")
    store = LocalStore(tmp_path)
    write_archive(store, synth_payloads(M, T0 + 1_000, 400))
    recs = _records()
    ids = _archive(store, recs)
    fills = [r for r in recs if r["type"] == "fill"]
    assert len(fills) >= 4
    res = compact(store, now_ms=LATER)
    assert f"trades/{T}/{DAY}" in res.written and res.problems == []
    man = json.loads(store.get(columnar.day_key("trades", T, DAY, columnar.MANIFEST)))
    assert man["rows"] == len(recs) and man["trader"] == T and man["n_gaps"] == 0
    assert man["first_tick_ms"] == T0 + 1_000
    # docs/columnar.md: fills per model with the Up ask of the state each was decided on
    q = f"""
        SELECT t.model, count(*) AS fills, sum(t.realised) AS realised, sum(t.fee) AS fees,
               min(CAST(s.up_ask_px_0 AS DOUBLE)) AS min_ask
        FROM read_parquet('{tmp_path}/columnar/trades/{T}/*.parquet') t
        JOIN read_parquet('{tmp_path}/columnar/states/{M}/*.parquet', union_by_name = true) s
          ON s.tick_ms = t.tick
        WHERE t.type = 'fill' GROUP BY t.model
    """
    ((model, n, realised, fees, min_ask),) = duckdb.sql(q).fetchall()
    assert model == "v1" and n == len(fills)
    assert math.isclose(realised, sum(float(r["realised"]) for r in fills), abs_tol=1e-9)  # type: ignore[arg-type]
    assert math.isclose(fees, sum(float(r["fee"]) for r in fills), abs_tol=1e-9)  # type: ignore[arg-type]
    assert 0 < min_ask < 1
    # entry IDs and the whole record survive
    back = duckdb.sql(f"SELECT ms, seq, record FROM read_parquet('{tmp_path}/columnar/trades/{T}/*.parquet') "
                      "ORDER BY ms, seq").fetchall()  # fmt: skip
    assert [f"{a}-{b}" for a, b, _ in back] == ids
    assert [json.loads(x) for _, _, x in back] == [json.loads(record_json(r)) for r in recs]
    swap = duckdb.sql(f"SELECT json_extract_string(record, '$.to') FROM read_parquet("
                      f"'{tmp_path}/columnar/trades/{T}/*.parquet') WHERE type = 'swap'").fetchall()  # fmt: skip
    assert swap == [("v1",)]  # a field without a column is still queryable
    assert compact(store, now_ms=LATER).written == []  # idempotent


def test_wrong_types_are_null_in_their_column_and_kept_in_the_record() -> None:
    recs = [
        {"v": 1, "trader": T, "type": "fill", "tick": "soon", "shares": "3", "partial": 1, "realised": math.nan,
         "blob": b"\x00\xff", "levels": 2**70, "market": ["x"]},
        {"v": 1, "trader": T, "type": "fill", "tick": 5, "shares": 3, "partial": False, "realised": -0.5},
    ]  # fmt: skip
    t = trades_table(["10-0", "10-1"], recs)
    assert set(FIELDS) <= set(t.column_names) and t.column("seq").to_pylist() == [0, 1]
    assert t.column("tick").to_pylist() == [None, 5] and t.column("shares").to_pylist() == [None, 3.0]
    assert t.column("partial").to_pylist() == [None, False] and t.column("levels").to_pylist() == [None, None]
    assert t.column("market").to_pylist() == [None, None]
    assert math.isnan(t.column("realised").to_pylist()[0])
    kept = json.loads(t.column("record").to_pylist()[0])
    assert kept["tick"] == "soon" and kept["blob"] == {"$bytes": "00ff"} and kept["realised"] == "nan"


def test_cli_compacts_one_trader(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path)
    _archive(store, _records())
    write_archive(store, [(f"{T0 + 2_000}-0", msgpack.packb({"v": 1, "trader": "other", "type": "day"}))],
                  "trades", market="other")  # fmt: skip
    # the day must be closed: the store's clock is now, years after T0
    assert main(["--store", str(tmp_path), "--kind", "trades", "--trader", T]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == [f"trades/{T}/{DAY}"]
    assert pq.read_table(tmp_path / columnar.day_key("trades", T, DAY)).num_rows == len(_records())
    assert main(["--store", str(tmp_path), "--kind", "trades", "--trader", "../etc"]) == 2
