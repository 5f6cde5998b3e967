"""Common public recording layouts, each mapped onto the generic layout (:mod:`fusion.importers.layout`).

* ``generic``: ``fusion-ticks/1`` itself (CSV or Parquet).
* ``tob-csv``: top-of-book polling CSVs of rolling Up/Down markets, header
  ``Timestamp,TargetTime,Expiration,UpBid,UpAsk,UpMid,UpSpread,UpBidLiquidity,UpAskLiquidity,DownBid,DownAsk,
  DownMid,DownSpread,DownBidLiquidity,DownAskLiquidity``: ``TargetTime``/``Expiration`` are the window's
  start/end. ``*Liquidity`` is the depth of a whole side, not the top level's size: it is not taken (the sizes
  stay absent). Such loggers often write ``Timestamp`` in local time: the cleaner detects and undoes a
  whole-hour offset against the windows.
* ``poller``: per-minute pollers of the Up token's bid/ask with a Binance spot price: an SQLite file with table
  ``polydata(timestamp, market_name, token_id, best_bid, best_ask, btc_usdt_spot, outcome, ...)`` or a CSV
  with those columns. ``timestamp`` is UTC; the window is read from ``market_name``
  (``"Bitcoin Up or Down - July 21, 9AM ET"``: a one-hour window starting at 9 AM New York time, in the
  year of the row). The Down book is derived from the Up book (flagged ``DERIVED_POLY_BOOK``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from fusion.importers.layout import BAD_TIME, LayoutError, Table, from_arrow, read_arrow, read_table, to_epoch_ms

ET = ZoneInfo("America/New_York")
TOB_COLUMNS = {"Timestamp": "time", "TargetTime": "window_start", "Expiration": "window_end", "UpBid": "up_bid",
               "UpAsk": "up_ask", "DownBid": "down_bid", "DownAsk": "down_ask"}  # fmt: skip
_NAME = re.compile(r"(?P<mon>[A-Za-z]+)\s+(?P<day>\d{1,2}),?\s+(?P<hour>\d{1,2})\s*(?P<ampm>AM|PM)\s+ET", re.I)
_MONTHS = {m: i for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"), start=1)}  # fmt: skip


def load_tob_csv(path: Path) -> Table:
    t = read_arrow(path)
    missing = [c for c in TOB_COLUMNS if c not in t.column_names]
    if missing:
        raise LayoutError(f"{path.name}: not a top-of-book polling CSV (missing {missing})")
    t = t.select(list(TOB_COLUMNS)).rename_columns(list(TOB_COLUMNS.values()))
    return from_arrow(t, path.name)


def window_of_name(name: str, near_ms: int) -> tuple[int, int] | None:
    """(start, end) epoch ms of an hourly market named like ``"... July 21, 9AM ET"`` (the name has no year: the
    one that puts the start nearest ``near_ms``, so a "December 31, 7PM ET" row written on January 1 UTC is
    placed in the right year); None if the name is not of that form."""
    m = _NAME.search(name)
    if m is None or m["mon"].lower() not in _MONTHS:
        return None
    h = int(m["hour"]) % 12 + (12 if m["ampm"].upper() == "PM" else 0)
    year = datetime.fromtimestamp(near_ms / 1000, ET).year
    best: int | None = None
    for y in (year - 1, year, year + 1):
        try:
            ms = int(datetime(y, _MONTHS[m["mon"].lower()], int(m["day"]), h, tzinfo=ET).timestamp() * 1000)
        except ValueError:
            continue
        if best is None or abs(ms - near_ms) < abs(best - near_ms):
            best = ms
    return None if best is None else (best, best + 3_600_000)


def load_poller(path: Path) -> Table:
    if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            cur = con.execute("SELECT * FROM polydata ORDER BY id")
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        t = pa.table({n: pa.array([None if r[i] is None else str(r[i]) for r in rows], pa.string())
                      for i, n in enumerate(names)})  # fmt: skip
    else:
        t = read_arrow(path)
    need = ("timestamp", "market_name", "best_bid", "best_ask")
    if any(c not in t.column_names for c in need):
        raise LayoutError(f"{path.name}: not a poller recording (needs {need})")
    times = to_epoch_ms(t.column("timestamp"))
    names_ = [str(x or "") for x in t.column("market_name").to_pylist()]
    cache: dict[str, tuple[int, int] | None] = {}
    ws = np.full(times.size, BAD_TIME, np.int64)
    we = ws.copy()
    for i, (nm, tm) in enumerate(zip(names_, times.tolist(), strict=True)):
        if tm == BAD_TIME:
            continue
        w = cache.get(nm) if nm in cache else cache.setdefault(nm, window_of_name(nm, tm))
        if w is not None:
            ws[i], we[i] = w
    cols = {"time": t.column("timestamp"), "window_start": pa.array(ws), "window_end": pa.array(we),
            "up_bid": t.column("best_bid"), "up_ask": t.column("best_ask")}  # fmt: skip
    if "btc_usdt_spot" in t.column_names:
        cols["binance_price"] = t.column("btc_usdt_spot")
    if "outcome" in t.column_names:
        cols["outcome"] = t.column("outcome")
    tab = from_arrow(pa.table(cols), path.name)
    tab.times["window_start"], tab.times["window_end"] = ws, we  # epoch ms already: not re-scaled
    return tab


LAYOUTS: dict[str, Callable[[Path], Table]] = {"generic": read_table, "tob-csv": load_tob_csv, "poller": load_poller}


def load_layout(name: str, path: Path) -> Table:
    if name not in LAYOUTS:
        raise LayoutError(f"unknown layout {name!r} (known: {sorted(LAYOUTS)})")
    if not path.exists():
        raise LayoutError(f"{path}: no such file")
    return LAYOUTS[name](path)
