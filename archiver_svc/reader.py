"""Load a market's archived states and labels into numpy (for the trainer, the batch labeler, tools).

API::

    from archiver_svc.reader import load_market, MarketData

    md = load_market(source, "BTC-15M", start_ms=None, end_ms=None,
                     labels=True, columns_cache=None, workers=2)
    md.states      # common.schema.StateColumns: tick_ms (N,), raw (N, 70) f8, features (N, F) f4, flags, slugs
    md.labels      # common.schema.LabelColumns or None (labels=False, or none archived)
    md.problems    # list[str]: "key: reason" of every object/entry that was skipped

``source`` is an :class:`~common.store.ObjectStore`, a local directory (the ``fusion sync`` cache
or a ``file://`` store) or a store URL (``s3://bucket/prefix``, endpoint/region from settings).
``start_ms``/``end_ms`` select entries with ``start_ms <= entry time < end_ms`` (None: open).

Guarantees:
* rows are in entry-ID order and de-duplicated by entry ID (states and labels separately;
  a label's ``tick_ms`` is the ID of the state it labels);
* a corrupt or truncated object, or an entry that fails its schema, is reported in ``problems``,
  logged once, and skipped: never an exception for bad data;
* one object = one window; payloads are decoded in bulk (layout templates + ``frombuffer``);
* a UTC day of the recorded origin compacted by ``fusion compact`` (:mod:`archiver_svc.columnar`) is read from
  its Parquet file, only the columns asked for, when its manifest names exactly the day's current windows (else
  from the windows, and from the windows too when it was compacted under another feature set: states of another
  feature set get the current features, recomputed from their raw fields by :mod:`archiver_svc.object_columns`);
  imported objects (``origin=imported|both``) are always read from their windows.
  ``columns_cache`` is accepted and ignored (the per-object column cache was replaced by the compacted days).

This module lists, loads (in parallel), quarantines and concatenates; one object's columns are built by
:mod:`archiver_svc.object_columns`, a compacted day's by :mod:`archiver_svc.colread`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.budget import Estimate, check, estimate_rows, label_bytes, state_bytes
from archiver_svc.market_data import MarketData
from archiver_svc.object_columns import label_arrays, state_arrays
from archiver_svc.quarantine import move, quarantine
from archiver_svc.rawcols import RawColumns, SlugList, narrow
from archiver_svc.windows import (
    ArchiveError,
    ArchiveObject,
    decode_fast,
    decode_object,
    market_prefix,
    max_inflated_bytes,
    parse_key,
    utc_date,
)
from common.features import FEATURE_SET
from common.log import log_once
from common.schema import N_RAW, RAW_INDEX, LabelColumns, StateColumns
from common.store import ObjectInfo, ObjectStore, open_store

log = logging.getLogger("archiver.reader")
DAY_MS = 86_400_000
Arrays = dict[str, npt.NDArray[Any]]


def as_store(source: ObjectStore | str | os.PathLike[str]) -> ObjectStore:
    if isinstance(source, ObjectStore):
        return source
    s = str(source)
    if "://" in s and not s.startswith("file://"):
        from common.settings import get_settings

        st = get_settings()
        return open_store(s, st.s3_endpoint_url, st.s3_region)
    return open_store(s)


def list_objects(
    store: ObjectStore, kind: str, market: str, start_ms: int | None, end_ms: int | None
) -> list[ObjectInfo]:
    """Objects of ``market`` that may hold entries in ``[start_ms, end_ms)``, by window start."""
    base = market_prefix(kind, market)
    if start_ms is not None and end_ms is not None and end_ms - start_ms <= 400 * DAY_MS:
        infos = []
        for day in range((start_ms - DAY_MS) // DAY_MS, end_ms // DAY_MS + 1):
            infos.extend(store.list(f"{base}{utc_date(day * DAY_MS)}/"))
    else:
        infos = list(store.list(base))
    keyed = sorted(((p[2], o) for o in infos if (p := parse_key(o.key)) is not None), key=lambda x: x[0])
    out: list[ObjectInfo] = []
    for i, (ws, o) in enumerate(keyed):
        if end_ms is not None and ws >= end_ms:
            break
        nxt = keyed[i + 1][0] if i + 1 < len(keyed) else None
        if start_ms is not None and nxt is not None and nxt <= start_ms:
            continue  # the next window starts before the range: this one ends before it too
        out.append(o)
    return out


def iter_objects(
    source: ObjectStore | str | os.PathLike[str],
    kind: str,
    market: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Iterator[tuple[str, ArchiveObject | ArchiveError]]:
    """Each object's key and decoded content (or the error that made it unusable), in window order."""
    store = as_store(source)
    limit = max_inflated_bytes(_window_ms(None))
    for o in list_objects(store, kind, market, start_ms, end_ms):
        try:
            yield o.key, decode_object(store.get(o.key), o.key, limit)
        except ArchiveError as e:
            yield o.key, e
        except KeyError:
            yield o.key, ArchiveError("object vanished while reading")


def _window_ms(window_s: int | None) -> int:
    if window_s is None:
        from common.settings import get_settings

        window_s = get_settings().archive_window_s
    return int(window_s) * 1000


def _load_one(store: ObjectStore, info: ObjectInfo, kind: str, max_bytes: int) -> tuple[Arrays, list[str], int]:
    """(columns, problems reported now, problems reported before) of one object.

    An unusable object is moved to quarantine; an object with unusable entries is copied there (its good
    entries stay in place and load); either is reported only the first time (see archiver_svc.quarantine)."""
    problems: list[str] = []
    try:
        data = store.get(info.key)
    except KeyError:
        return {}, [f"{info.key}: object vanished while reading"], 0
    try:
        obj = decode_fast(data, info.key, max_bytes)
    except ArchiveError as e:
        reason = str(e)
        new = _safely(info.key, lambda: move(store, info.key, data, reason)[1])
        return {}, [f"{info.key}: {reason}"] if new else [], 0 if new else 1
    arrays = (state_arrays if kind == "states" else label_arrays)(obj, problems, info.key)
    skipped = 0
    if problems:
        bad = [(p.split(": entry ", 1)[1].split(": ", 1)[0], p) for p in problems if ": entry " in p]
        why = f"{len(problems)} problems; the other entries stay in place"
        if not _safely(info.key, lambda: quarantine(store, info.key, data, why, bad)[1]):
            problems, skipped = [], len(problems)
    return arrays, problems, skipped


def _safely(key: str, quarantine_it: Callable[[], bool]) -> bool:
    """Run a quarantine step; True when the problem is new (to report). A store that refuses the copy or
    the delete (read-only, permissions) never fails a load: the problem is then reported as new."""
    try:
        return quarantine_it()
    except Exception as e:
        log_once(log, f"quarantine-failed:{key}", "could not quarantine; skipped only", obj=key, error=repr(e))
        return True


def load_arrays(
    source: ObjectStore | str | os.PathLike[str],
    kind: str,
    market: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    columns_cache: str | os.PathLike[str] | bool | None = None,
    workers: int = 2,
    window_s: int | None = None,
    skipped: list[int] | None = None,
    raw_fields: Sequence[str] | None = None,
    columnar: bool = True,
) -> tuple[Arrays, list[str]]:
    """Columns of every entry of ``kind`` in range (plus ``ids`` (N, 2) ``[ms, seq]``), and the problems
    found now (problems found by an earlier load are only counted, into ``skipped[0]``). Objects may inflate
    to :func:`~archiver_svc.windows.max_inflated_bytes` of ``window_s`` (default: the archive window setting).
    ``columnar=False``: every object from its window, compacted days ignored (the imported view)."""
    store = as_store(source)
    limit = max_inflated_bytes(_window_ms(window_s))
    infos = list_objects(store, kind, market, start_ms, end_ms)
    problems: list[str] = []
    results: list[Arrays] = []
    n_skipped = 0
    from archiver_svc.colread import plan, read_labels, read_states  # pyarrow only when a reader loads data

    days, from_windows = plan(store, kind, market, start_ms, end_ms, infos) if columnar else ([], list(infos))
    failed: list[str] = []
    stale: set[str] = set()  # days compacted under another feature set: from their windows (features recomputed)
    if kind == "states":
        have = {o.key.split("/")[2] for o in infos}
        stale = {d for d, m in days if m.get("feature_set", FEATURE_SET) != FEATURE_SET and d in have}
        days = [(d, m) for d, m in days if d not in stale]
    if kind == "states" and days:
        got, failed = read_states(store, market, days, raw_fields)
        if got is not None:
            results.append(got)
    for day, man in days if kind == "labels" else []:
        lab = read_labels(store, market, day, man)
        if lab is None:
            failed.append(day)
        elif lab["ids"].shape[0]:
            results.append(lab)
    from_windows.extend(o for o in infos if o.key.split("/")[2] in set(failed) | stale)  # unreadable: windows
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for arrays, probs, sk in pool.map(lambda i: _load_one(store, i, kind, limit), from_windows):
            problems.extend(probs)
            n_skipped += sk
            if arrays and arrays["ids"].shape[0]:
                results.append(_project(arrays, raw_fields))
    results.sort(key=lambda a: int(a["ids"][0, 0]))
    if skipped is not None:
        skipped.append(n_skipped)
    for p in problems:
        log_once(log, f"problem:{p}", "archive problem; skipped (quarantined)", problem=p)
    if not results:
        return {}, problems
    out = _concat(results, problems)
    table = out.pop("slug_table", None)
    ids = out["ids"]
    if ids.shape[0] > 1:
        ms, seq = ids[:, 0], ids[:, 1]
        if not bool(((ms[1:] > ms[:-1]) | ((ms[1:] == ms[:-1]) & (seq[1:] > seq[:-1]))).all()):
            order = np.lexsort((seq, ms))
            ids = ids[order]
            first = np.ones(ids.shape[0], dtype=bool)
            first[1:] = (ids[1:] != ids[:-1]).any(axis=1)
            sel = order[first]
            out = {k: v[sel] for k, v in out.items()}
    tick = out["tick_ms"]
    if tick.size > 1 and not bool((tick[1:] > tick[:-1]).all()):  # cannot happen for validated rows: a guard
        keep = np.ones(tick.size, bool)
        keep[1:] = tick[1:] > np.maximum.accumulate(tick)[:-1]
        problems.append(f"{market}: {int((~keep).sum())} {kind} rows with unsorted or repeated ticks skipped")
        out = {k: v[keep] for k, v in out.items()}
    ms = out["ids"][:, 0]
    lo = 0 if start_ms is None else int(np.searchsorted(ms, start_ms, "left"))
    hi = ms.size if end_ms is None else int(np.searchsorted(ms, end_ms, "left"))
    if lo > 0 or hi < ms.size:
        out = {k: v[lo:hi] for k, v in out.items()}
    if table is not None:
        out["slug_table"] = table
    return out, problems


def _project(arrays: Arrays, raw_fields: Sequence[str] | None) -> Arrays:
    """Only ``raw_fields`` of the raw matrix, one narrow column each (all of it when None)."""
    if raw_fields is None or "raw" not in arrays:
        return arrays
    raw = arrays.pop("raw")
    for f in raw_fields:
        arrays[f"raw:{f}"] = narrow(f, raw[:, RAW_INDEX[f]])
    return arrays


def _concat(results: list[Arrays], problems: list[str]) -> Arrays:
    tables = [r.pop("slug_table") for r in results if "slug_table" in r]
    shapes = [tuple((k, v.shape[1:]) for k, v in sorted(r.items())) for r in results]
    major = max(
        set(shapes), key=lambda s: sum(r["ids"].shape[0] for r, s2 in zip(results, shapes, strict=True) if s2 == s)
    )
    keep = [r for r, s in zip(results, shapes, strict=True) if s == major]
    if len(keep) < len(results):
        problems.append(f"{len(results) - len(keep)} objects with another column shape skipped")
    if len(keep) == 1:  # one part (e.g. all days compacted, read into one set of arrays): no copy
        if tables and len(tables) == len(results):
            keep[0]["slug_table"] = next(t for t, r in zip(tables, results, strict=True) if r is keep[0])
        return keep[0]
    out = {}
    for k in [k for k in keep[0] if k != "slug_idx"]:
        out[k] = np.concatenate([r[k] for r in keep])
        for r in keep:  # release each part as soon as it is copied: peak = the output + one part
            r[k] = out[k][:0]
    if tables:
        table = np.unique(np.concatenate(tables))
        kept = {id(r) for r in keep}
        remapped = [
            np.searchsorted(table, t)[r["slug_idx"]] for r, t in zip(results, tables, strict=True) if id(r) in kept
        ]
        out["slug_idx"] = np.concatenate(remapped).astype(np.int32)
        out["slug_table"] = table
    return out


def _slugs(s: Arrays) -> SlugList:
    return SlugList(s["slug_table"].tolist(), s["slug_idx"])


def estimate_load(
    store: ObjectStore,
    market: str,
    start_ms: int | None,
    end_ms: int | None,
    *,
    labels: bool = True,
    raw_fields: Sequence[str] | None = None,
    window_s: int | None = None,
    n_horizons: int = 4,
) -> Estimate:
    """Rows and peak bytes of a :func:`load_market` (the columns are concatenated once: twice their size)."""
    from common.settings import get_settings

    wms, tick = _window_ms(window_s), get_settings().tick_ms
    infos = list_objects(store, "states", market, start_ms, end_ms)
    rows = estimate_rows(store, "states", market, start_ms, end_ms, wms, tick, infos)
    per = state_bytes(raw_fields) + (label_bytes(n_horizons) if labels else 0)
    return Estimate(rows, 2 * rows * per)


def load_market(
    source: ObjectStore | str | os.PathLike[str],
    market: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    labels: bool = True,
    columns_cache: str | os.PathLike[str] | bool | None = None,
    workers: int = 2,
    window_s: int | None = None,
    origin: str = "recorded",
    raw_fields: Sequence[str] | None = None,
    max_memory_gb: float | None = None,
) -> MarketData:
    """States (and labels) of ``market`` with entry time in ``[start_ms, end_ms)``; see the module doc.

    ``origin``: ``recorded`` (the live archive), ``imported`` (what ``fusion import``/``backfill`` wrote under
    ``imported/``) or ``both`` (a recorded state wins over an imported one of the same tick).
    With ``raw_fields``, ``states.raw`` is a :class:`~archiver_svc.rawcols.RawColumns` of those fields only.
    Before reading, the rows and bytes are estimated; :class:`~archiver_svc.budget.TooLarge` when over
    ``max_memory_gb`` (default: the ``train_max_memory_gb`` setting)."""
    from archiver_svc.origins import merge_market, origin_stores
    from common.settings import get_settings

    parts = origin_stores(as_store(source), origin)  # imported objects: always from their windows
    ests = [estimate_load(st, market, start_ms, end_ms, labels=labels, raw_fields=raw_fields, window_s=window_s)
            for st, _ in parts]  # fmt: skip
    est = Estimate(sum(e.rows for e in ests), sum(e.bytes for e in ests))
    limit = get_settings().train_max_memory_gb if max_memory_gb is None else max_memory_gb
    check(f"loading {market}", est, limit, "load a shorter range (start_ms/end_ms)")
    kw: dict[str, Any] = {"labels": labels, "workers": workers, "window_s": window_s, "raw_fields": raw_fields}
    loaded = [_load_market(st, market, start_ms, end_ms, columnar=col, **kw) for st, col in parts]
    return loaded[0] if len(loaded) == 1 else merge_market(loaded[0], loaded[1])


def _load_market(
    store: ObjectStore,
    market: str,
    start_ms: int | None,
    end_ms: int | None,
    *,
    labels: bool,
    workers: int,
    window_s: int | None,
    raw_fields: Sequence[str] | None,
    columnar: bool,
) -> MarketData:
    skipped: list[int] = []
    s, problems = load_arrays(store, "states", market, start_ms, end_ms, workers=workers, window_s=window_s,
                              skipped=skipped, raw_fields=raw_fields, columnar=columnar)  # fmt: skip
    if s:
        raw: Any = s["raw"] if raw_fields is None else RawColumns({f: s[f"raw:{f}"] for f in raw_fields})
        states = StateColumns(
            tick_ms=s["tick_ms"],
            raw=raw,
            features=s["features"],
            flags=s["flags"],
            slugs=_slugs(s),
        )
    else:
        states = StateColumns(
            np.zeros(0, np.int64), np.zeros((0, N_RAW)), np.zeros((0, 0), np.float32), np.zeros(0, np.int32), []
        )
    lc: LabelColumns | None = None
    if labels:
        lb, lprobs = load_arrays(store, "labels", market, start_ms, end_ms, workers=workers, window_s=window_s,
                                 skipped=skipped, columnar=columnar)  # fmt: skip
        problems += lprobs
        if lb and lb["horizons"].shape[0] > 1 and not bool((lb["horizons"] == lb["horizons"][0]).all()):
            sets, inv, counts = np.unique(lb["horizons"], axis=0, return_inverse=True, return_counts=True)
            keep = inv.reshape(-1) == int(np.argmax(counts))  # one horizon set per LabelColumns: the majority's
            problems.append(f"{market}: {int((~keep).sum())} labels with other horizons than {sets[np.argmax(counts)]}")
            lb = {k: v[keep] for k, v in lb.items()}
        if lb:
            lc = LabelColumns(
                tick_ms=lb["tick_ms"],
                horizons_s=tuple(int(h) for h in lb["horizons"][0]),
                rewards=lb["rewards"],
                best=lb["best"],
                valid=lb["valid"],
                exit_kind=lb["exit_kind"],
            )
    return MarketData(market, states, lc, problems, sum(skipped))
