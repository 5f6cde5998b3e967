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

This module plans (listing and manifests read once per load, shared by the estimate and the read), loads (in
parallel) and concatenates; one object is listed, decoded and quarantined by :mod:`archiver_svc.objects` (its
columns built by :mod:`archiver_svc.object_columns`), a compacted day is read by :mod:`archiver_svc.colread`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.budget import Estimate, check, estimate_rows, label_bytes, state_bytes
from archiver_svc.market_data import MarketData
from archiver_svc.objects import _load_one, _window_ms, as_store, iter_objects, list_objects
from archiver_svc.rawcols import RawColumns, SlugList, narrow
from common.features import FEATURE_SET
from common.log import log_once
from common.schema import N_RAW, RAW_INDEX, LabelColumns, StateColumns
from common.store import ObjectInfo, ObjectStore

__all__ = ["MarketData", "as_store", "estimate_load", "iter_objects", "list_objects", "load_arrays", "load_market"]

log = logging.getLogger("archiver.reader")
DAY_MS = 86_400_000
Arrays = dict[str, npt.NDArray[Any]]
Plan = tuple[list[ObjectInfo], list[tuple[str, dict[str, Any]]], list[ObjectInfo]]
Plans = dict[tuple[Any, ...], Plan]


def planned(
    store: ObjectStore, kind: str, market: str, start_ms: int | None, end_ms: int | None, columnar: bool,
    plans: Plans | None = None,
) -> Plan:  # fmt: skip
    """``(window objects of the range, [(day, manifest)] read from Parquet, objects read from their windows)``:
    listed and manifests read once per load (``plans`` memoises them between the estimate and the read)."""
    key = (id(store), kind, market, start_ms, end_ms, columnar)
    if plans is not None and key in plans:
        return plans[key]
    from archiver_svc.colread import plan  # pyarrow only when a reader loads data

    infos = list_objects(store, kind, market, start_ms, end_ms)
    days, windows = plan(store, kind, market, start_ms, end_ms, infos) if columnar else ([], list(infos))
    if plans is not None:
        plans[key] = (infos, days, windows)
    return infos, days, windows


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
    plans: Plans | None = None,
) -> tuple[Arrays, list[str]]:
    """Columns of every entry of ``kind`` in range (plus ``ids`` (N, 2) ``[ms, seq]``), and the problems
    found now (problems found by an earlier load are only counted, into ``skipped[0]``). Objects may inflate
    to :func:`~archiver_svc.windows.max_inflated_bytes` of ``window_s`` (default: the archive window setting).
    ``columnar=False``: every object from its window, compacted days ignored (the imported view)."""
    store = as_store(source)
    from archiver_svc.windows import max_inflated_bytes

    limit = max_inflated_bytes(_window_ms(window_s))
    problems: list[str] = []
    results: list[Arrays] = []
    n_skipped = 0
    from archiver_svc.colread import read_labels, read_states  # pyarrow only when a reader loads data

    infos, days, from_windows = planned(store, kind, market, start_ms, end_ms, columnar, plans)
    from_windows = list(from_windows)
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
    plans: Plans | None = None,
) -> Estimate:
    """Rows and peak bytes of a :func:`load_market` (the columns are concatenated once: twice their size)."""
    from common.settings import get_settings

    wms, tick = _window_ms(window_s), get_settings().tick_ms
    infos, days, windows = planned(store, "states", market, start_ms, end_ms, True, plans)
    rows = estimate_rows(store, "states", market, start_ms, end_ms, wms, tick, infos, (days, windows))
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
    plans: Plans = {}  # listings and manifests read once, for the estimate and the read
    ests = [estimate_load(st, market, start_ms, end_ms, labels=labels, raw_fields=raw_fields, window_s=window_s,
                          plans=plans) for st, _ in parts]  # fmt: skip
    est = Estimate(sum(e.rows for e in ests), sum(e.bytes for e in ests))
    limit = get_settings().train_max_memory_gb if max_memory_gb is None else max_memory_gb
    check(f"loading {market}", est, limit, "load a shorter range (start_ms/end_ms)")
    kw: dict[str, Any] = {"labels": labels, "workers": workers, "window_s": window_s, "raw_fields": raw_fields,
                          "plans": plans}  # fmt: skip
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
    plans: Plans,
) -> MarketData:
    skipped: list[int] = []
    s, problems = load_arrays(store, "states", market, start_ms, end_ms, workers=workers, window_s=window_s,
                              skipped=skipped, raw_fields=raw_fields, columnar=columnar, plans=plans)  # fmt: skip
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
