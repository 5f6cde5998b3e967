"""Read compacted days (see :mod:`archiver_svc.columnar`) as the reader's arrays, only the columns asked for.

A day's Parquet file is used only when its manifest names exactly the day's current window objects (key and
size): a window that changed after compaction sends the reader back to the windows. A local store's files are
memory-mapped; an S3 store's file is fetched whole (one GET per day). An unreadable file is logged once and the
day is read from its windows instead (never an exception for bad data).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from archiver_svc import columnar
from archiver_svc.colcodec import to_numpy
from archiver_svc.quarantine import move
from archiver_svc.rawcols import narrow, narrow_dtype
from archiver_svc.windows import market_prefix, parse_key, utc_date
from common.log import log_once
from common.schema import ACTIONS, RAW_FIELDS
from common.store import LocalStore, ObjectInfo, ObjectStore

log = logging.getLogger("archiver.reader")
Arrays = dict[str, npt.NDArray[Any]]


def current_manifest(
    store: ObjectStore, kind: str, market: str, day: str, sources: Sequence[ObjectInfo]
) -> dict[str, Any] | None:
    """The day's manifest when it names exactly ``sources`` (the day's window objects; any manifest when the day
    has no windows left), else None."""
    try:
        m = columnar.parse_manifest(store.get(columnar.day_key(kind, market, day, columnar.MANIFEST)))
    except KeyError:
        return None
    if m is None or m.get("kind") != kind:
        return None
    if sources and [tuple(s) for s in m["sources"]] != sorted((o.key, int(o.size)) for o in sources):
        return None
    return m


def plan(
    store: ObjectStore, kind: str, market: str, start_ms: int | None, end_ms: int | None, infos: list[ObjectInfo]
) -> tuple[list[tuple[str, dict[str, Any]]], list[ObjectInfo]]:
    """``([(day, manifest)] read from Parquet, window objects read from the windows)`` of a range, given the
    range's window objects ``infos``. A day is read from Parquet when its manifest names exactly its current
    windows, or when it has no windows left at all (deleted by retention, or written directly as columnar)."""
    by_day: dict[str, list[ObjectInfo]] = {}
    for o in infos:
        by_day.setdefault(o.key.split("/")[2], []).append(o)
    lo = None if start_ms is None else utc_date(start_ms)
    hi = None if end_ms is None else utc_date(end_ms - 1)
    col_days = set()
    for o in store.list(f"{columnar.PREFIX}/{kind}/{market}/_manifests/"):
        day = o.key.rsplit("/", 1)[1][: -len(columnar.MANIFEST)]
        if (lo is None or day >= lo) and (hi is None or day <= hi):
            col_days.add(day)
    days: list[tuple[str, dict[str, Any]]] = []
    windows: list[ObjectInfo] = []
    for day in sorted(col_days | set(by_day)):
        man = None
        if day in col_days:
            every = [o for o in store.list(f"{market_prefix(kind, market)}{day}/") if parse_key(o.key) is not None]
            man = current_manifest(store, kind, market, day, every)
        if man is not None:
            days.append((day, man))
        else:
            windows.extend(by_day.get(day, []))
    return days, windows


def _table(store: ObjectStore, key: str, columns: list[str] | None, features: bool = False) -> pa.Table:
    """The file's ``columns`` (None: all), plus every ``f_*`` column when ``features``; one open, memory-mapped
    for a local store, one GET otherwise."""
    src = pa.memory_map(str(store._path(key))) if isinstance(store, LocalStore) else pa.BufferReader(store.get(key))
    f = pq.ParquetFile(src)
    if columns is not None and features:
        columns = columns + [n for n in f.schema_arrow.names if n.startswith("f_")]
    return f.read(columns=columns)


def _np(t: pa.Table, name: str) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = t.column(name).to_numpy()
    return out


def read_states(
    store: ObjectStore, market: str, days: Sequence[tuple[str, dict[str, Any]]], raw_fields: Sequence[str] | None
) -> tuple[Arrays | None, list[str]]:
    """The days' states as reader arrays, streamed day by day into arrays allocated once from the manifests'
    row counts (no per-day copies to concatenate): ``raw`` (N, 70) float64 when ``raw_fields`` is None, else
    one narrow ``raw:<field>`` column per field. Returns ``(arrays or None, days that could not be read)``."""
    total = sum(int(m.get("rows", 0)) for _, m in days)
    raw = list(RAW_FIELDS) if raw_fields is None else list(raw_fields)
    out: Arrays = {"ids": np.empty((total, 2), np.int64), "flags": np.empty(total, np.int32)}
    out["slug_idx"] = np.empty(total, np.int32)
    if raw_fields is None:
        out["raw"] = np.empty((total, len(raw)))
    else:
        for f in raw:
            out[f"raw:{f}"] = np.empty(total, narrow_dtype(f))
    slugs: dict[str, int] = {}
    failed: list[str] = []
    o = 0
    cols = None if raw_fields is None else ["tick_ms", "seq", "flags", "slug", *raw]

    def fetch(day: str) -> tuple[pa.Table | None, Exception | None]:
        try:
            return _table(store, columnar.day_key("states", market, day), cols, True), None
        except Exception as e:  # reported by the loop below, with the day
            return None, e

    pool = ThreadPoolExecutor(1)  # the next day is read and decoded while this one is copied into the arrays
    ahead = pool.submit(fetch, days[0][0]) if days else None
    for i, (day, man) in enumerate(days):
        key = columnar.day_key("states", market, day)
        got, err = ahead.result() if ahead is not None else (None, None)
        ahead = pool.submit(fetch, days[i + 1][0]) if i + 1 < len(days) else None
        try:
            if got is None:
                raise err or ValueError("not read")
            t = got
            n = t.num_rows
            if n != int(man.get("rows", -1)):
                raise ValueError(f"{n} rows, the manifest says {man.get('rows')}")
            feats = [c for c in t.column_names if c.startswith("f_")]
            if "features" not in out:
                out["features"] = np.empty((total, len(feats)), np.float32)
            elif out["features"].shape[1] != len(feats):
                raise _OtherWidth(f"{len(feats)} features, other days have {out['features'].shape[1]}")
            sl = slice(o, o + n)
            out["ids"][sl, 0] = _np(t, "tick_ms")
            out["ids"][sl, 1] = _np(t, "seq")
            out["flags"][sl] = _np(t, "flags")
            for j, f in enumerate(raw):
                stored = t.column(f)
                if raw_fields is None:
                    out["raw"][sl, j] = to_numpy(stored)
                    continue
                dt = out[f"raw:{f}"].dtype
                if dt == np.float32 and pa.types.is_decimal(stored.type) and stored.type.scale <= 3 and "_px" in f:
                    c = to_numpy(stored, np.float32)  # on the 0.001 grid by construction: no check needed
                else:
                    c = narrow(f, to_numpy(stored))
                if c.dtype != out[f"raw:{f}"].dtype:  # a value off the grid: that field stays float64
                    out[f"raw:{f}"] = out[f"raw:{f}"].astype(np.float64)
                out[f"raw:{f}"][sl] = c
            _fill_rows(out["features"], o, [_np(t, f) for f in feats])
            slug = t.column("slug").combine_chunks()
            if not isinstance(slug, pa.DictionaryArray):
                slug = slug.dictionary_encode()
            gmap = np.array([slugs.setdefault(x, len(slugs)) for x in slug.dictionary.to_pylist()], np.int32)
            out["slug_idx"][sl] = gmap[slug.indices.to_numpy(zero_copy_only=False)] if gmap.size else 0
            o += n
        except _OtherWidth as e:  # a valid file of another feature width (a feature-set change): its windows
            log_once(
                log, f"columnar:{key}", "columnar day of another width; reading its windows", obj=key, error=str(e)
            )
            failed.append(day)
        except Exception as e:  # unreadable or unexpected file: the windows are the truth
            set_aside(store, "states", market, day, repr(e))
            failed.append(day)
    pool.shutdown()
    if o == 0:
        return None, failed
    out = {k: v[:o] for k, v in out.items()}
    names = list(slugs)
    order = np.argsort(np.asarray(names, dtype=str), kind="stable")
    rank = np.empty(len(names), np.int32)
    rank[order] = np.arange(len(names), dtype=np.int32)
    out["slug_idx"] = rank[out["slug_idx"]] if len(names) else out["slug_idx"]
    out["slug_table"] = np.asarray(names, dtype=str)[order]
    out["tick_ms"] = out["ids"][:, 0]
    out.setdefault("features", np.zeros((o, 0), np.float32))
    return out, failed


class _OtherWidth(ValueError):
    pass


def set_aside(store: ObjectStore, kind: str, market: str, day: str, why: str) -> None:
    """An unreadable day file: logged once, moved to the quarantine (for a person to inspect) and its manifest
    deleted, so the reader uses the day's windows and the next ``fusion compact`` rebuilds the day. A day whose
    windows are gone (retention) cannot be rebuilt: its file is left in place (only logged). Never raises: a store
    that refuses only leaves the day to be read from its windows."""
    key = columnar.day_key(kind, market, day)
    log_once(log, f"columnar:{key}", "columnar file unreadable; reading the day's windows", obj=key, error=why)
    try:
        if not any(parse_key(o.key) is not None for o in store.list(f"{market_prefix(kind, market)}{day}/")):
            return  # the only copy of the day: never moved away
        with contextlib.suppress(KeyError):  # missing: only the manifest to drop
            move(store, key, store.get(key), f"unreadable columnar file: {why}"[:500])
        store.delete(columnar.day_key(kind, market, day, columnar.MANIFEST))
    except Exception as e:  # read-only store, permissions: reading the windows is still right
        log_once(log, f"columnar-aside:{key}", "could not set the columnar file aside", obj=key, error=repr(e))


def _fill_rows(dst: npt.NDArray[Any], at: int, cols: Sequence[npt.NDArray[Any]]) -> None:
    """``dst[at:at + n, j] = cols[j]``: the columns stacked as rows, then one transposing copy (measured 3x faster
    than one strided pass per column into the row-major matrix)."""
    if cols:
        np.copyto(dst[at : at + cols[0].shape[0]], np.vstack(cols).T)


def read_labels(store: ObjectStore, market: str, day: str, man: dict[str, Any]) -> Arrays | None:
    """The day's labels as reader arrays; None when the file cannot be read."""
    key = columnar.day_key("labels", market, day)
    try:
        hs = [int(h) for h in man.get("horizons_s", [])]
        t = _table(store, key, None)
        n = t.num_rows
        out = {"ids": np.stack([_np(t, "tick_ms"), _np(t, "seq").astype(np.int64)], 1)}
        out["tick_ms"] = out["ids"][:, 0]
        out["horizons"] = np.broadcast_to(np.asarray(hs, np.int64), (n, len(hs)))
        out["rewards"] = np.stack([np.stack([_np(t, f"reward_{h}s_{a}") for a in ACTIONS], -1) for h in hs], 1).astype(
            np.float32
        )
        out["best"] = np.stack([_np(t, f"best_{h}s") for h in hs], 1).astype(np.int8)
        out["valid"] = np.stack([_np(t, f"valid_{h}s") for h in hs], 1).astype(np.uint8)
        out["exit_kind"] = np.stack([_np(t, f"exit_{h}s") for h in hs], 1).astype(np.uint8)
        return out
    except Exception as e:  # unreadable or unexpected file: the windows are the truth
        set_aside(store, "labels", market, day, repr(e))
        return None
