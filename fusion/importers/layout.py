"""The generic layout ``fusion-ticks/1``: one row per tick per market, CSV or Parquet (read with pyarrow).

Columns (header names; all but the first three optional, unknown ones ignored):

=====================  ====================================================================================
``time``               the tick: ISO 8601 (an offset is honoured; without one, UTC), or epoch s / ms / us
``window_start``       the Polymarket window's start (same formats)
``window_end``         the window's end
``up_bid`` ``up_ask``  Up token best bid / ask (0..1); ``up_bid_size`` ``up_ask_size`` their sizes (shares)
``down_bid`` ...       the same for the Down token (``down_ask``, ``down_bid_size``, ``down_ask_size``)
``up_last`` ...        last trade prices (``down_last``)
``binance_price``      Binance last trade price; ``binance_bid`` ``binance_ask`` (+ ``_size``) its top of book
``outcome``            ``up`` / ``down`` (or 1 / 0) once the window resolved, else empty
``market``             our market name (else ``--market``); ``slug`` ``condition_id`` ``up_token`` ``down_token``
any raw field name     a column named like a state's raw field (``bn_net_10s``, ``bn_vol_1h``, ... see
                       ``common.schema.RAW_FIELDS``) is taken as recorded, as is
=====================  ====================================================================================

Guarantees: :func:`read_table` returns numpy columns (float64 for numbers, NaN where empty; int64 epoch ms
for the times, :data:`BAD_TIME` where unparsable) and never raises for bad values, only for an unreadable file
or a missing required column (:class:`LayoutError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from common.schema import RAW_INDEX

LAYOUT_VERSION = "fusion-ticks/1"
BAD_TIME = np.iinfo(np.int64).min
TIME_COLUMNS = ("time", "window_start", "window_end")
NUMERIC = (
    "up_bid", "up_ask", "up_bid_size", "up_ask_size", "down_bid", "down_ask", "down_bid_size", "down_ask_size",
    "up_last", "down_last", "binance_price", "binance_bid", "binance_ask", "binance_bid_size", "binance_ask_size",
)  # fmt: skip
TEXT = ("outcome", "market", "slug", "condition_id", "up_token", "down_token")

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class LayoutError(ValueError):
    """A file that cannot be read as the layout (unreadable, or a required column missing)."""


@dataclass(slots=True)
class Table:
    """Columns of a file in the generic layout (``n`` rows)."""

    n: int
    times: dict[str, I64]  # time, window_start, window_end: epoch ms, BAD_TIME where unparsable
    num: dict[str, F64]  # NUMERIC columns present and raw-field columns present
    text: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    derived: set[str] = field(default_factory=set)  # columns computed by an adapter, not recorded (fidelity)
    files: list[str] = field(default_factory=list)  # names of the files concatenated (times["file"]: index)


def to_epoch_ms(col: pa.Array | pa.ChunkedArray) -> I64:
    """Epoch ms of a column of ISO strings (naive = UTC), timestamps, or numbers (s, ms or us by magnitude)."""
    t = col.type
    if pa.types.is_timestamp(t):
        return _ts_ms(col)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        v = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        scale = np.where(np.abs(v) >= 1e14, 1e-3, np.where(np.abs(v) >= 1e11, 1.0, 1e3))
        scaled = v * scale
        return np.where(np.isfinite(scaled), np.round(np.nan_to_num(scaled)), BAD_TIME).astype(np.int64)
    s = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    s = pc.replace_substring_regex(s, r"^(\d{4}-\d\d-\d\d) ", r"\1T")
    s = pc.replace_substring_regex(s, r"Z$", "+00:00")
    with_tz = pc.match_substring_regex(s, r"[+-]\d\d:?\d\d$")
    out = np.full(len(s), BAD_TIME, dtype=np.int64)
    for fmt, mask in (("%Y-%m-%dT%H:%M:%S%z", with_tz), ("%Y-%m-%dT%H:%M:%S", pc.invert(with_tz))):
        part = pc.if_else(mask, s, pa.scalar(None, pa.string()))
        frac = pc.extract_regex(part, r"(?P<f>\.\d+)")
        plain = pc.replace_substring_regex(part, r"\.\d+", "")
        plain = pc.replace_substring_regex(plain, r"([+-]\d\d):(\d\d)$", r"\1\2")
        ts = pc.strptime(plain, format=fmt, unit="ms", error_is_null=True)
        ms = _ts_ms(ts)
        f = pc.struct_field(frac, [0]) if len(frac) else pa.array([], pa.string())
        fr = np.asarray(pc.cast(pc.binary_join_element_wise("0", f, ""), pa.float64(), safe=False)
                        .to_numpy(zero_copy_only=False), dtype=np.float64)  # fmt: skip
        fr = np.nan_to_num(fr) * 1000.0
        m = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & (ms != BAD_TIME)
        out[m] = ms[m] + np.round(fr[m]).astype(np.int64)
    return out


def _ts_ms(col: Any) -> I64:
    c = pc.cast(col, pa.timestamp("ms"))
    v = pc.cast(c, pa.int64()).to_numpy(zero_copy_only=False)
    arr = np.asarray(pd_fill(v), dtype=np.float64)
    return np.where(np.isfinite(arr), np.nan_to_num(arr), BAD_TIME).astype(np.int64)


def pd_fill(v: Any) -> F64:
    """Numbers with nulls as NaN."""
    return np.asarray(v, dtype=np.float64)


def to_float(col: Any) -> F64:
    """A column as float64 (empty or unparsable: NaN)."""
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        col = pc.cast(pc.utf8_trim_whitespace(pc.cast(col, pa.string())), pa.float64(), safe=False) \
            if _all_numeric(col) else _lenient_float(col)  # fmt: skip
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _all_numeric(col: Any) -> bool:
    s = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    ok = pc.match_substring_regex(s, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return bool(pc.all(pc.or_kleene(ok, pc.is_null(s))).as_py() is not False)


def _lenient_float(col: Any) -> Any:
    s = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    ok = pc.match_substring_regex(s, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return pc.cast(pc.if_else(ok, s, pa.scalar(None, pa.string())), pa.float64())


def read_arrow(path: str | Path) -> pa.Table:
    """A CSV (any extension but .parquet/.pq) or Parquet file as an Arrow table, every CSV column as text."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(p)
        import pyarrow.csv as pcsv

        with p.open("rb") as fh:
            header = fh.readline().decode("utf-8-sig", "replace").strip().split(",")
        types = {h.strip().strip('"'): pa.string() for h in header}
        return pcsv.read_csv(p, convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    except (OSError, pa.ArrowInvalid) as e:
        raise LayoutError(f"{p.name}: unreadable ({e})") from e


def from_arrow(t: pa.Table, source: str = "") -> Table:
    """The generic layout's columns of an Arrow table."""
    names = {n.strip().lower(): n for n in t.column_names}
    missing = [c for c in TIME_COLUMNS if c not in names]
    if missing:
        raise LayoutError(f"{source}: missing required column(s) {missing} of layout {LAYOUT_VERSION}")
    times = {c: to_epoch_ms(t.column(names[c])) for c in TIME_COLUMNS}
    num: dict[str, F64] = {}
    for c in NUMERIC + tuple(RAW_INDEX):
        if c in names:
            num[c] = to_float(t.column(names[c]))
    text: dict[str, list[str]] = {}
    for c in TEXT:
        if c in names:
            text[c] = [("" if v is None else str(v).strip()) for v in t.column(names[c]).to_pylist()]
    return Table(t.num_rows, times, num, text, source)


def read_table(path: str | Path) -> Table:
    return from_arrow(read_arrow(path), Path(path).name)


def concat(tables: list[Table]) -> Table:
    """One table of several files of one market (e.g. daily files), so windows and labels span them; a column
    missing from a file is NaN / empty there. Row numbers count on across the files, in the given order."""
    if len(tables) == 1:
        return tables[0]
    n = sum(t.n for t in tables)
    times = {k: np.concatenate([t.times[k] for t in tables]) for k in TIME_COLUMNS}
    num = {c: np.concatenate([t.num.get(c, np.full(t.n, np.nan)) for t in tables])
           for c in sorted({c for t in tables for c in t.num})}  # fmt: skip
    text = {c: [v for t in tables for v in (t.text.get(c) or [""] * t.n)]
            for c in sorted({c for t in tables for c in t.text})}  # fmt: skip
    derived = set().union(*(t.derived for t in tables))
    times["file"] = np.concatenate([np.full(t.n, i, np.int64) for i, t in enumerate(tables)])
    return Table(n, times, num, text, f"{len(tables)} files", derived, [t.source for t in tables])
