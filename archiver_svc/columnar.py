"""Columnar form of the archive: one Parquet file per (kind, market, UTC day), derived from the closed windows.

Layout (next to the landing windows, in the same store)::

    columnar/states/{market}/{YYYY-MM-DD}.parquet         one row per state, in entry-ID order
    columnar/states/{market}/_manifests/{YYYY-MM-DD}.manifest.json
        (rows, first/last tick, gaps over the tick, sha256, codec, schema and feature-set versions, sources)
    columnar/labels/{market}/{YYYY-MM-DD}.parquet         one row per label (``tick_ms`` = the labelled state)
    columnar/trades/{trader}/{YYYY-MM-DD}.parquet         one row per trader record (:mod:`archiver_svc.coltrades`)

States columns: ``tick_ms`` int64, ``seq`` int32 (the entry ID is ``<tick_ms>-<seq>``), ``flags`` int32,
``slug`` string (dictionary), every field of :data:`common.schema.RAW_FIELDS` by name, as an exact DECIMAL
(null: not known) when the day's values lie on the field's grid, else float64 (NaN: not known; see
:mod:`archiver_svc.colcodec`), every market feature as ``f_<name>`` float32. Labels columns: ``tick_ms``,
``seq``, and per horizon ``h`` (seconds): ``reward_{h}s_{action}`` float32 for each of
:data:`common.schema.ACTIONS`, ``best_{h}s`` int8, ``valid_{h}s`` uint8, ``exit_{h}s`` uint8.

Guarantees: :func:`encode_table` is deterministic (same rows, same codec, same pyarrow -> same bytes), so a
re-compaction rewrites identical bytes; the manifest is written after its Parquet file, so a manifest names a
complete file (its sha256). The Parquet values are the landing values bit for bit (a DECIMAL column read
through :func:`archiver_svc.colcodec.to_numpy`, or cast to DOUBLE by DuckDB, is the float64 the state held);
choosing float32 is the loader's business (see :mod:`archiver_svc.rawcols`). Layout version 2 (narrow
decimals); ``fusion compact`` rewrites a day whose manifest has another version, the reader still reads layout 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from archiver_svc import coltrades
from archiver_svc.colcodec import (
    BSS,
    DECIMAL_KINDS,
    DELTA,
    DICT,
    PLAIN,
    decimal_column,
    feature_encoding,
    raw_column,
    writer_options,
)
from common.features import FEATURE_SET, MARKET_FEATURES
from common.names import check_name
from common.schema import ACTIONS, RAW_FIELDS, STATE_VERSION

COLUMNAR_VERSION = 2
READABLE_VERSIONS = (1, 2)  # layout 1 (float64 raw fields) reads the same values: kept readable until rebuilt
PREFIX = "columnar"
PARQUET = ".parquet"
MANIFEST = ".manifest.json"
# chosen by measurement (benchmarks/scale.py, one day = 172,800 states, bytes/state; encode s): zstd-1 140.5
# (0.5-1.0 s), zstd-3 131.8 (0.6-1.3 s), zstd-9 117.9 (2.4-6.4 s), lz4 197.4, snappy 196.4, none 656.3.
# zstd-3: a third smaller than lz4/snappy; zstd-9 saves 11 % more at 4-5x the encode CPU, which compaction
# throughput cannot afford
CODEC = "zstd"
CODEC_LEVEL: int | None = 3
ROW_GROUP = 1 << 20
KINDS = ("states", "labels", "trades")  # trades: a trader's records, named by the trader (archiver_svc.coltrades)
Arrays = dict[str, npt.NDArray[Any]]


def day_key(kind: str, market: str, day: str, suffix: str = PARQUET) -> str:
    """Key of a day's Parquet file (or, with ``suffix=MANIFEST``, its manifest)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if len(day) != 10 or day[4] != "-" or day[7] != "-" or not day.replace("-", "").isdigit():
        raise ValueError(f"bad day {day!r} (YYYY-MM-DD)")
    if suffix == MANIFEST:  # under "_manifests/": data tools skip "_" folders when they read a folder of Parquet
        return f"{PREFIX}/{kind}/{check_name(market)}/_manifests/{day}{MANIFEST}"
    return f"{PREFIX}/{kind}/{check_name(market)}/{day}{suffix}"


def feature_names(width: int) -> list[str]:
    if width == len(MARKET_FEATURES):
        return [f"f_{n}" for n in MARKET_FEATURES]
    return [f"f_{i}" for i in range(width)]


def states_table(a: Arrays, schema: pa.Schema | None = None) -> pa.Table | None:
    """Table of validated state columns as the reader builds them (``ids``, ``tick_ms``, ``raw`` (N, N_RAW) or
    ``raw_t`` (N_RAW, N), ``features``, ``flags``, ``slug_idx``/``slug_table``); raw fields in their narrow
    exact form (:func:`archiver_svc.colcodec.raw_column`), or in the types of ``schema`` (None when a value
    does not fit them)."""
    n = int(a["ids"].shape[0])
    cols: dict[str, pa.Array] = {
        "tick_ms": pa.array(np.ascontiguousarray(a["tick_ms"], np.int64)),
        "seq": pa.array(np.ascontiguousarray(a["ids"][:, 1], np.int32)),
        "flags": pa.array(np.ascontiguousarray(a["flags"], np.int32)),
    }
    table = a.get("slug_table")
    idx = a.get("slug_idx")
    if table is not None and idx is not None and n:
        cols["slug"] = pa.DictionaryArray.from_arrays(pa.array(np.asarray(idx, np.int32)), pa.array(table.tolist()))
    else:
        cols["slug"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([""]))
    raw_t = a["raw_t"] if "raw_t" in a else np.ascontiguousarray(np.asarray(a["raw"], np.float64).T)
    for j, name in enumerate(RAW_FIELDS):
        if schema is None:
            cols[name] = raw_column(name, raw_t[j])[0]
            continue
        typ = schema.field(name).type
        arr = decimal_column(raw_t[j], typ.scale, typ.precision) if pa.types.is_decimal(typ) else None
        if arr is None and pa.types.is_decimal(typ):
            return None
        cols[name] = arr if arr is not None else pa.array(np.ascontiguousarray(raw_t[j], np.float64))
    feats = np.asarray(a["features"], np.float32)
    feats_t = np.ascontiguousarray(feats.T)
    for j, name in enumerate(feature_names(feats.shape[1])):
        cols[name] = pa.array(feats_t[j])
    if schema is not None:  # the slug dictionary of each row group is its own
        cols["slug"] = cols["slug"].cast(schema.field("slug").type)
    return pa.table(cols)


def encodings(table: pa.Table) -> dict[str, str]:
    """Parquet encoding of each column of a states, labels or trades table (see :mod:`archiver_svc.colcodec`)."""
    if "record" in table.schema.names:
        return coltrades.encodings(table)
    out = {"tick_ms": DELTA, "slug": DICT}
    for f in table.schema:
        if f.name in out:
            continue
        if f.name in DECIMAL_KINDS:
            out[f.name] = DECIMAL_KINDS[f.name][2] if pa.types.is_decimal(f.type) else PLAIN
        elif f.name.startswith("f_") and pa.types.is_float32(f.type):
            out[f.name] = feature_encoding(f.name)
        elif f.name.startswith("reward_"):
            out[f.name] = BSS
        else:
            out[f.name] = PLAIN if pa.types.is_floating(f.type) else DICT
    return out


def labels_table(a: Arrays) -> tuple[pa.Table, tuple[int, ...]]:
    """Table of label columns (one horizon set: the first row's; callers pass one set) and its horizons."""
    hs = tuple(int(h) for h in a["horizons"][0]) if a["horizons"].shape[0] else ()
    cols: dict[str, pa.Array] = {
        "tick_ms": pa.array(np.ascontiguousarray(a["tick_ms"], np.int64)),
        "seq": pa.array(np.ascontiguousarray(a["ids"][:, 1], np.int32)),
    }
    for k, h in enumerate(hs):
        for j, act in enumerate(ACTIONS):
            cols[f"reward_{h}s_{act}"] = pa.array(np.ascontiguousarray(a["rewards"][:, k, j], np.float32))
        cols[f"best_{h}s"] = pa.array(np.ascontiguousarray(a["best"][:, k], np.int8))
        cols[f"valid_{h}s"] = pa.array(np.ascontiguousarray(a["valid"][:, k], np.uint8))
        cols[f"exit_{h}s"] = pa.array(np.ascontiguousarray(a["exit_kind"][:, k], np.uint8))
    return pa.table(cols), hs


def _options(table: pa.Table, codec: str, level: int | None) -> dict[str, Any]:
    return {"compression": codec, "compression_level": level, "write_statistics": ["tick_ms"], "store_schema": True,
            **writer_options(encodings(table))}  # fmt: skip


def encode_table(table: pa.Table, codec: str = CODEC, level: int | None = CODEC_LEVEL) -> bytes:
    """Deterministic Parquet bytes of ``table``."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP, **_options(table, codec, level))
    data: bytes = sink.getvalue().to_pybytes()
    return data


class DayWriter:
    """A day's states written as they are decoded, one row group per chunk of windows (deterministic for the same
    chunks): the first chunk fixes each raw field's type; :meth:`add` returns False when a later chunk does not
    fit it (a value off a DECIMAL's grid), and the caller then writes the day in one piece instead."""

    def __init__(self) -> None:
        self.sink = pa.BufferOutputStream()
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.ticks: list[npt.NDArray[np.int64]] = []
        self.rows = 0

    def add(self, a: Arrays) -> bool:
        table = states_table(a, self.schema)
        if table is None or (self.schema is not None and not table.schema.equals(self.schema)):
            return False
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.sink, table.schema, **_options(table, CODEC, CODEC_LEVEL))
        self.writer.write_table(table, row_group_size=ROW_GROUP)
        self.ticks.append(np.asarray(a["tick_ms"], np.int64))
        self.rows += table.num_rows
        return True

    def finish(self) -> bytes:
        if self.writer is not None:
            self.writer.close()
        data: bytes = self.sink.getvalue().to_pybytes()
        return data


def manifest(
    kind: str,
    market: str,
    day: str,
    data: bytes,
    tick_ms: npt.NDArray[np.int64],
    tick_s: float,
    sources: Sequence[tuple[str, int]],
    horizons: Sequence[int] = (),
    codec: str = CODEC,
) -> dict[str, Any]:
    """The manifest of one day's file: what a tool needs to trust it without opening it (for trades, ``tick_ms``
    are the records' entry-ID times and there are no gaps: a trader records only when something happens)."""
    gaps: list[list[int]] = []
    if tick_ms.size > 1 and kind != "trades":
        d = np.diff(tick_ms)
        at = np.nonzero(d > 1.5 * tick_s * 1000)[0]
        gaps = [[int(tick_ms[i]), int(tick_ms[i + 1])] for i in at[:1000]]
    return {
        "version": COLUMNAR_VERSION,
        "kind": kind,
        ("trader" if kind == "trades" else "market"): market,
        "day": day,
        "rows": int(tick_ms.size),
        "first_tick_ms": int(tick_ms[0]) if tick_ms.size else None,
        "last_tick_ms": int(tick_ms[-1]) if tick_ms.size else None,
        "tick_s": tick_s,
        "gaps": gaps,  # [before, after] tick pairs further apart than 1.5 ticks (first 1000)
        "n_gaps": int(np.sum(np.diff(tick_ms) > 1.5 * tick_s * 1000)) if gaps else 0,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "codec": codec,
        "state_schema_version": STATE_VERSION,
        "feature_set": FEATURE_SET,
        "horizons_s": list(horizons),
        "sources": [[k, int(s)] for k, s in sources],  # [window object key, size]
    }


def dumps(m: dict[str, Any]) -> bytes:
    return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes, versions: tuple[int, ...] = READABLE_VERSIONS) -> dict[str, Any] | None:
    """A manifest's content, or None when it is not one of this version."""
    try:
        m = json.loads(data)
    except ValueError:
        return None
    if not isinstance(m, dict) or m.get("version") not in versions or not isinstance(m.get("sources"), list):
        return None
    return m
