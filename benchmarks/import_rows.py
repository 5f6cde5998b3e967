"""``fusion import`` rows per second per layout (read, clean, derive, features, encode, label, write to a local
store), on synthetic recordings written here in each layout: one day of 1 s ticks of a BTC 15-minute market
(quick: 3 hours); then a training run on the imported generic data with its hold-out figures.
"""

from __future__ import annotations

import csv
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from common.settings import get_settings
from common.store import LocalStore
from fusion.importers.adapters import load_layout
from fusion.importers.clean import Report
from fusion.importers.write import prepare, write
from tests.fixtures.imports.make import generic_rows

M = "BTC-15M"


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _tob(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "TargetTime", "Expiration", "UpBid", "UpAsk", "DownBid", "DownAsk"])
        for r in rows:
            w.writerow([r["time"][:19].replace("T", " "), r["window_start"][:19].replace("T", " "),
                        r["window_end"][:19].replace("T", " "), r["up_bid"], r["up_ask"], r["down_bid"],
                        r["down_ask"]])  # fmt: skip


def _poller(path: Path, rows: list[dict[str, str]]) -> None:
    from datetime import UTC, datetime, timedelta

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE polydata (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, market_name TEXT, "
                "token_id TEXT, best_bid REAL, best_ask REAL, btc_usdt_spot REAL, outcome TEXT)")  # fmt: skip
    out = []
    for r in rows:
        try:
            t = datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        except ValueError:
            continue
        et = (t - timedelta(hours=5)).replace(minute=0, second=0, tzinfo=UTC)
        h = et.hour % 12 or 12
        name = f"Bitcoin Up or Down - {et.strftime('%B')} {et.day}, {h}{'AM' if et.hour < 12 else 'PM'} ET"
        out.append((t.strftime("%Y-%m-%d %H:%M:%S"), name, "1", r["up_bid"], r["up_ask"], r["binance_price"],
                    r["outcome"].upper()))  # fmt: skip
    con.executemany("INSERT INTO polydata (timestamp, market_name, token_id, best_bid, best_ask, btc_usdt_spot, "
                    "outcome) VALUES (?, ?, ?, ?, ?, ?, ?)", out)  # fmt: skip
    con.commit()
    con.close()


def _import(layout: str, path: Path, store_dir: Path) -> dict[str, Any]:
    s = get_settings()
    t0 = time.perf_counter()
    tab = load_layout(layout, path)
    t_read = time.perf_counter() - t0
    states, rep, cols = prepare(tab, M, s, None, Report(source=path.name, market=M, layout=layout))
    write(LocalStore(store_dir), M, states, cols, rep, s)
    dt = time.perf_counter() - t0
    return {"rows": rep.rows_read, "states": len(states), "read_s": round(t_read, 3), "total_s": round(dt, 3),
            "rows_per_s": round(rep.rows_read / dt)}  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    n_windows = 12 if quick else 96
    rows = generic_rows(n_windows, 1000)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _write_csv(tmp / "g.csv", rows)
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        pq.write_table(pcsv.read_csv(tmp / "g.csv"), tmp / "g.parquet")
        _tob(tmp / "t.csv", rows)
        _poller(tmp / "p.db", rows)
        for name, layout, f in (("generic_csv", "generic", "g.csv"), ("generic_parquet", "generic", "g.parquet"),
                                ("tob_csv", "tob-csv", "t.csv"), ("poller_sqlite", "poller", "p.db")):  # fmt: skip
            r = _import(layout, tmp / f, tmp / f"store-{name}")
            out[f"{name}_rows_per_s"], out[f"{name}_total_s"] = r["rows_per_s"], r["total_s"]
            out.setdefault("rows", r["rows"])
            out.setdefault("states", r["states"])
        from trainer_svc.pipeline import JobParams, run_training

        t0 = time.perf_counter()
        summ = run_training(JobParams(market=M, store_url=f"file://{tmp / 'store-generic_csv'}", origin="imported",
                                      promote=False, overrides={"epochs": 1 if quick else 5}))  # fmt: skip
        out["train_imported_s"] = round(time.perf_counter() - t0, 2)
        for k, v in (summ.get("holdout") or {}).items():
            out[f"holdout_pnl_per_window_{k}"] = v.get("pnl_per_window")
        out["holdout_windows"] = max((v.get("windows", 0) for v in (summ.get("holdout") or {}).values()), default=0)
    return out
