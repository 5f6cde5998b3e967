"""``fusion import``: recorded data into the archive (under ``imported/``), with a report of what was done.

    fusion import FILE... --market BTC-15M [--layout generic|tob-csv|poller] [--binance ZIP...] [--tick-ms N]

Several files (e.g. one a day) are imported as one recording, so windows and labels span them.

Exit status: 0 when states were written, 1 when nothing usable was found (the report says why), 2 for a
usage error. The report (rows read, kept, fixed and dropped by reason, states per window, gaps, fidelity)
is printed as a table, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.log import setup_logging
from common.names import InvalidName, check_name
from common.settings import get_settings
from common.store import open_store
from fusion.importers.adapters import LAYOUTS, load_layout
from fusion.importers.binance import read_binance
from fusion.importers.clean import Report
from fusion.importers.layout import LayoutError, concat
from fusion.importers.write import prepare, write


def show(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table as RTable

    c = Console(stderr=True)
    t = RTable(title=f"fusion import {rep['market']} ({rep['layout']}, {rep['source']})")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("rows_read", "rows_kept", "tick_ms", "states_written", "windows", "objects_written", "labels_written"):
        t.add_row(k, str(rep[k]))
    for k, v in sorted(rep["fixed"].items()):
        t.add_row(f"fixed: {k}", str(v))
    for k, v in sorted(rep["dropped"].items()):
        t.add_row(f"dropped: {k}", str(v))
    t.add_row("gaps (> 5 ticks)", str(len(rep["gaps"])))
    fid = rep["fidelity"]
    for how in ("recorded", "derived"):
        t.add_row(how, ", ".join(sorted(f for f, h in fid.items() if h == how)) or "-")
    c.print(t)
    for n in rep["notes"]:
        c.print(f"[yellow]note:[/] {n}")


def import_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion import", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="recordings (CSV, Parquet or SQLite by layout)")
    ap.add_argument("--market", required=True, help="our market name (e.g. BTC-15M)")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="generic")
    ap.add_argument("--binance", nargs="*", default=[], help="Binance daily dumps (aggTrades/klines zips or CSVs)")
    ap.add_argument("--tick-ms", type=int, help="tick of the states (default: the recording's median interval)")
    ap.add_argument("--store-url", default=s.store_url)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    a = ap.parse_args(argv)
    try:
        check_name(a.market, "market")
    except InvalidName as e:
        ap.error(str(e))
    if a.tick_ms is not None and not 50 <= a.tick_ms <= 60_000:
        ap.error("--tick-ms must be within [50, 60000]")
    setup_logging(s.log_level, s.log_json)
    store = open_store(a.store_url, s.s3_endpoint_url, s.s3_region)
    try:
        tabs = [load_layout(a.layout, Path(f)) for f in a.files]
        tab = concat(tabs)
        bn = read_binance([Path(p) for p in a.binance]) if a.binance else None
    except LayoutError as e:
        print(f"fusion import: {e}", file=sys.stderr)
        return 1
    rep = Report(source=", ".join(Path(f).name for f in a.files), market=a.market, layout=a.layout)
    if len(tabs) > 1:  # row numbers in the report count on across the files
        sizes = [f"{Path(f).name}={t.n}" for f, t in zip(a.files, tabs, strict=True)]
        rep.notes.append("rows per file: " + ", ".join(sizes))
    states, rep, cols = prepare(tab, a.market, s, a.tick_ms, rep, binance=bn)
    if not a.dry_run and states:
        write(store, a.market, states, cols, rep, s)
    if not states:
        rep.notes.append("no usable rows: nothing written")
    reports = [rep.to_dict()]
    for r in reports:
        if a.json:
            print(json.dumps(r, sort_keys=True))
        else:
            show(r)
    return 0 if states else 1
