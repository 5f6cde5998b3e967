"""Binance's public daily dumps (aggTrades and 1-minute klines; spot and USD-M futures) as the Binance side.

Files are the dumps' zips (one CSV inside) or the CSVs themselves. Columns, per Binance's public data
documentation (no header in spot files; USD-M futures files may start with a header line, skipped):

* aggTrades: agg trade id, price, quantity, first trade id, last trade id, time, buyer was maker
  [, best price match (spot only)];
* klines: open time, open, high, low, close, volume, close time, quote volume, trades, taker buy base volume,
  taker buy quote volume, ignore.

Times are epoch ms, except spot files from 2025-01-01 on, in microseconds: every time is normalised to ms by
its magnitude, so files of both eras mix. :func:`attach_binance` gives each row of a table the Binance price
and aggregates known at its time (never a later trade or an unfinished bar).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pcsv

from fusion.importers.layout import LayoutError, Table

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MIN_MS = 60_000


@dataclass(slots=True)
class BinanceSide:
    trade_ms: I64  # aggTrades, sorted
    trade_px: F64
    trade_qty: F64
    trade_sign: F64  # +1 taker buy, -1 taker sell
    bar_ms: I64  # 1-minute klines (open time), sorted
    bar_close: F64
    bar_volume: F64


def to_ms(v: F64) -> I64:
    """Epoch ms of epoch ms or us values (spot dumps switched to us on 2025-01-01)."""
    return np.where(v >= 1e14, v // 1000, v).astype(np.int64)


def _csv_bytes(path: Path) -> bytes:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if not names:
                raise LayoutError(f"{path.name}: no CSV inside")
            return z.read(names[0])
    return path.read_bytes()


def _table(data: bytes, name: str) -> pa.Table:
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    header = bool(first) and not first.split(",")[0].strip().lstrip("-").replace(".", "").isdigit()
    n = len(first.split(","))
    opts = pcsv.ReadOptions(column_names=[f"c{i}" for i in range(n)], skip_rows=1 if header else 0)
    try:
        return pcsv.read_csv(io.BytesIO(data), read_options=opts)
    except pa.ArrowInvalid as e:
        raise LayoutError(f"{name}: not a Binance dump ({e})") from e


def read_binance(paths: list[Path]) -> BinanceSide:
    """aggTrades and klines of any number of dumps, merged and sorted by time."""
    tms, tpx, tq, ts, bms, bc, bv = [], [], [], [], [], [], []
    for p in paths:
        t = _table(_csv_bytes(p), p.name)
        cols = [np.asarray(t.column(i).to_numpy(zero_copy_only=False)) for i in range(t.num_columns)]
        if t.num_columns == 12:  # klines
            bms.append(to_ms(cols[0].astype(np.float64)))
            bc.append(cols[4].astype(np.float64))
            bv.append(cols[5].astype(np.float64))
        elif t.num_columns in (7, 8):  # aggTrades
            tms.append(to_ms(cols[5].astype(np.float64)))
            tpx.append(cols[1].astype(np.float64))
            tq.append(cols[2].astype(np.float64))
            maker = np.char.lower(cols[6].astype(str)) == "true"
            ts.append(np.where(maker, -1.0, 1.0))  # buyer was maker: the taker sold
        else:
            raise LayoutError(f"{p.name}: {t.num_columns} columns is neither aggTrades (7/8) nor klines (12)")

    def cat(xs: list[Any], dt: type) -> npt.NDArray[Any]:
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

    t_ms, b_ms = cat(tms, np.int64), cat(bms, np.int64)
    o, ob = np.argsort(t_ms, kind="stable"), np.argsort(b_ms, kind="stable")
    return BinanceSide(t_ms[o], cat(tpx, np.float64)[o], cat(tq, np.float64)[o], cat(ts, np.float64)[o],
                       b_ms[ob], cat(bc, np.float64)[ob], cat(bv, np.float64)[ob])  # fmt: skip


def _window_sum(t: I64, cum: F64, lo: I64, hi: I64) -> F64:
    """Sum over events with ``lo < time <= hi`` from a cumulative sum with a leading 0."""
    return cum[np.searchsorted(t, hi, "right")] - cum[np.searchsorted(t, lo, "right")]


def attach_binance(tab: Table, bn: BinanceSide, at: I64 | None = None) -> None:
    """Fill the table's Binance columns (price; trade aggregates from aggTrades, volumes from klines) in place,
    from what was known at each row's time (or at ``at``, each row's tick). Existing values are kept."""
    t = tab.times["time"] if at is None else at
    px = np.full(t.size, np.nan)
    if bn.trade_ms.size:
        i = np.searchsorted(bn.trade_ms, t, "right") - 1
        px = np.where(i >= 0, bn.trade_px[np.maximum(i, 0)], np.nan)
        notional = bn.trade_px * bn.trade_qty * bn.trade_sign
        cn = np.concatenate([[0.0], np.cumsum(notional)])
        cc = np.concatenate([[0.0], np.arange(1, bn.trade_ms.size + 1, dtype=np.float64)])
        cq = np.concatenate([[0.0], np.cumsum(bn.trade_qty)])
        tab.num.setdefault("bn_net_10s", _window_sum(bn.trade_ms, cn, t - 10_000, t))
        tab.num.setdefault("bn_net_prev_10s", _window_sum(bn.trade_ms, cn, t - 20_000, t - 10_000))
        tab.num.setdefault("bn_trades_10s", _window_sum(bn.trade_ms, cc, t - 10_000, t))
        tab.num.setdefault("bn_vol_1h", _window_sum(bn.trade_ms, cq, t - 3_600_000, t))
    if bn.bar_ms.size:
        done_end = bn.bar_ms + MIN_MS  # a bar is known once it closed
        j = np.searchsorted(done_end, t, "right") - 1
        close = np.where(j >= 0, bn.bar_close[np.maximum(j, 0)], np.nan)
        px = np.where(np.isfinite(px), px, close)
        cv = np.concatenate([[0.0], np.cumsum(bn.bar_volume)])
        if "bn_vol_1h" not in tab.num:
            tab.num["bn_vol_1h"] = _window_sum(done_end, cv, t - 3_600_000, t)
        hours = np.clip((t - bn.bar_ms[0]) / 3_600_000, 1.0, 24.0)  # the available part of the last 24 h
        tab.num.setdefault("bn_vol_24h_per_h", _window_sum(done_end, cv, t - 86_400_000, t) / hours)
    old = tab.num.get("binance_price")
    if old is None and not bn.trade_ms.size:
        tab.derived.add("binance_price")  # from closed 1-minute bars only
    tab.num["binance_price"] = px if old is None else np.where(np.isfinite(old), old, px)
