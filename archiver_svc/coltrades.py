"""A trader's records of one day as a table: typed columns for what queries use, the whole record as JSON.

Trade records are maps of several types (``decision``, ``fill``, ``refused``, ``swap``, ``day``, ``kill``, ...;
see ``trader_svc``) whose fields differ by type and may grow. The table has, per record (in entry-ID order):

* ``ms`` (int64, the entry ID's time: Redis time of the commit) and ``seq`` (int64), the entry ID ``<ms>-<seq>``;
* one typed column per field of :data:`FIELDS` (NULL when the record has no such field, or a value of another
  type: a wrong type is never cast, it is only left out of the typed column);
* ``record``: the whole record as JSON (sorted keys; bytes as ``{"$bytes": hex}``), so no field is lost and a
  field added later is queryable with ``json_extract`` before it gets a column.

Pure: no IO. Deterministic for the same records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

# field -> its column type; chosen from the records trader_svc writes (paper.py, service.py, swap.py)
_STR, _INT, _F64, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
FIELDS: dict[str, pa.DataType] = {
    "type": _STR, "market": _STR, "model": _STR, "action": _STR, "side": _STR, "kind": _STR, "intent": _STR,
    "reason": _STR, "day": _STR, "by": _STR,
    "tick": _INT, "fill_tick": _INT, "a": _INT, "levels": _INT, "decided_ns": _INT,
    "shares": _F64, "want": _F64, "avg_px": _F64, "notional": _F64, "fee": _F64, "cash": _F64, "realised": _F64,
    "pnl_frac": _F64, "window_end_s": _F64, "day_pnl": _F64, "start_equity": _F64,
    "partial": _BOOL,
}  # fmt: skip
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def _typed(v: Any, t: pa.DataType) -> Any:
    """``v`` when it is a value of column type ``t`` (ints are floats' values too), else None."""
    if t == _STR:
        return v if isinstance(v, str) else None
    if t == _BOOL:
        return v if isinstance(v, bool) else None
    if isinstance(v, bool):
        return None
    if t == _INT:
        return v if isinstance(v, int) and I64_MIN <= v <= I64_MAX else None
    if isinstance(v, int | float) and (isinstance(v, float) or abs(v) < 2**53):
        return float(v)
    return None


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # NaN / inf are not JSON
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def record_json(rec: dict[str, Any]) -> str:
    """The record as canonical JSON (sorted keys, compact)."""
    return json.dumps(_jsonable(rec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def trades_table(ids: Sequence[str], records: Sequence[dict[str, Any]]) -> pa.Table:
    """The records (with their entry IDs ``<ms>-<seq>``) as the day's table (see the module doc)."""
    ms, seq = [], []
    for eid in ids:
        a, _, b = eid.partition("-")
        ms.append(int(a))
        seq.append(int(b or 0))
    cols: dict[str, pa.Array] = {"ms": pa.array(ms, pa.int64()), "seq": pa.array(seq, pa.int64())}
    for name, t in FIELDS.items():
        cols[name] = pa.array([_typed(r.get(name), t) for r in records], t)
    cols["record"] = pa.array([record_json(r) for r in records], pa.string())
    return pa.table(cols)


def encodings(table: pa.Table) -> dict[str, str]:
    """Parquet encoding per column: the IDs delta-encoded, strings by dictionary, numbers plain."""
    out = {}
    for f in table.schema:
        if f.name in ("ms", "seq", "tick", "fill_tick", "decided_ns"):
            out[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(f.type) and f.name != "record":
            out[f.name] = "DICT"
        else:
            out[f.name] = "PLAIN"
    return out
