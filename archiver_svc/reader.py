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
* a UTC day compacted by ``fusion compact`` (:mod:`archiver_svc.columnar`) is read from its Parquet file,
  only the columns asked for, when its manifest names exactly the day's current windows (else from the windows).
  ``columns_cache`` is accepted and ignored (the per-object column cache was replaced by the compacted days).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.budget import Estimate, check, estimate_rows, label_bytes, state_bytes
from archiver_svc.colread import plan, read_labels, read_states
from archiver_svc.quarantine import move, quarantine
from archiver_svc.rawcols import RawColumns, SlugList, narrow
from archiver_svc.windows import (
    ArchiveError,
    ArchiveObject,
    UniformObject,
    decode_fast,
    decode_object,
    market_prefix,
    max_inflated_bytes,
    parse_ids,
    parse_key,
    utc_date,
)
from common.layout import Extracted, extract, match_matrix
from common.log import log_once
from common.schema import N_RAW, RAW_INDEX, LabelColumns, SchemaError, StateColumns, decode_label, decode_state
from common.store import ObjectInfo, ObjectStore, open_store
from common.validate import check_state, row_problems

log = logging.getLogger("archiver.reader")
DAY_MS = 86_400_000
Arrays = dict[str, npt.NDArray[Any]]


@dataclass(slots=True)
class MarketData:
    market: str
    states: StateColumns
    labels: LabelColumns | None
    problems: list[str] = field(default_factory=list)
    skipped: int = 0  # objects or entries skipped for problems reported (and quarantined) by an earlier load


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


# ---------------------------------------------------------------- per-object columns
def _prepare(
    obj: ArchiveObject | UniformObject, kind: str
) -> tuple[npt.NDArray[np.int64], list[Extracted], list[int], Callable[[int], bytes], Callable[[int], str]]:
    """(ids, template groups, leftover rows, payload of row, id of row) of either decoded form."""
    if isinstance(obj, UniformObject):
        groups, left = match_matrix(obj.payloads, kind)
        m = obj.payloads
        return obj.ids, groups, left, lambda i: m[i].tobytes(), obj.id_str
    groups, left = extract(obj.payloads, kind)
    return parse_ids(obj.ids), groups, left, obj.payloads.__getitem__, obj.ids.__getitem__


def _state_arrays(obj: ArchiveObject | UniformObject, problems: list[str], key: str) -> Arrays:
    ids, groups, left, payload_of, id_of = _prepare(obj, "states")
    parts: list[tuple[npt.NDArray[np.int64], Arrays]] = []
    for g in groups:
        pm = g.template.values.get("pm")
        slug = str(pm.get("slug", "")) if isinstance(pm, dict) else ""
        n = g.rows.size
        part = {
            "tick_ms": g.columns["t"].astype(np.int64),
            "raw": g.columns["x"].view("<f8").reshape(n, N_RAW),
            "features": g.columns["f"].view("<f4").reshape(n, -1),
            "flags": g.columns["st"].astype(np.int32),
            "slug": np.full(n, slug),
        }
        gid = ids[g.rows]
        v = g.template.values
        bad = row_problems(obj.market, gid[:, 0], gid[:, 1], str(v.get("m")), part["tick_ms"], part["raw"],
                           part["features"], str(v.get("fs")))  # fmt: skip
        parts.append(_without(g.rows, part, bad, problems, key, id_of))
    for i in left:
        try:
            s = decode_state(payload_of(i))
        except SchemaError as e:
            problems.append(f"{key}: entry {id_of(i)}: {e}")
            continue
        why = check_state(obj.market, id_of(i), s)
        if why:
            problems.append(f"{key}: entry {id_of(i)}: {why}")
            continue
        row = {
            "tick_ms": np.array([s.tick_ms], np.int64),
            "raw": s.raw.reshape(1, N_RAW),
            "features": s.features.reshape(1, -1),
            "flags": np.array([s.flags], np.int32),
            "slug": np.array([s.pm.slug if s.pm else ""]),
        }
        parts.append((np.array([i], np.int64), row))
    out = _assemble(parts, ids, problems, key)
    if "slug" in out and out["slug"].size and bool((out["slug"] == out["slug"][0]).all()):  # one market window
        out["slug_table"] = out.pop("slug")[:1].copy()
        out["slug_idx"] = np.zeros(out["slug_table"].size and out["ids"].shape[0], np.int32)
    elif "slug" in out:
        table, idx = np.unique(out.pop("slug"), return_inverse=True)
        out["slug_idx"] = idx.astype(np.int32).reshape(-1)
        out["slug_table"] = table
    return out


def _label_arrays(obj: ArchiveObject | UniformObject, problems: list[str], key: str) -> Arrays:
    ids, groups, left, payload_of, id_of = _prepare(obj, "labels")
    parts: list[tuple[npt.NDArray[np.int64], Arrays]] = []
    for g in groups:
        hs = np.asarray(g.template.values.get("h", []), dtype=np.int64)
        n, h = g.rows.size, hs.size
        part = {
            "tick_ms": g.columns["t"].astype(np.int64),
            "horizons": np.broadcast_to(hs, (n, h)),
            "rewards": g.columns["r"].view("<f4").reshape(n, h, 3),
            "best": g.columns["b"].view(np.int8).reshape(n, h),
            "valid": g.columns["ok"].reshape(n, h),
            "exit_kind": g.columns["xs"].reshape(n, h),
        }
        gid = ids[g.rows]
        bad = row_problems(obj.market, gid[:, 0], gid[:, 1], str(g.template.values.get("m")), part["tick_ms"])
        parts.append(_without(g.rows, part, bad, problems, key, id_of))
    for i in left:
        try:
            lb = decode_label(payload_of(i))
        except SchemaError as e:
            problems.append(f"{key}: entry {id_of(i)}: {e}")
            continue
        one = row_problems(obj.market, ids[i : i + 1, 0], ids[i : i + 1, 1], lb.market,
                           np.array([lb.tick_ms if 0 <= lb.tick_ms < 1 << 63 else -1], np.int64))  # fmt: skip
        if one:
            problems.append(f"{key}: entry {id_of(i)}: {one[0][1]}")
            continue
        row = {
            "tick_ms": np.array([lb.tick_ms], np.int64),
            "horizons": np.asarray([lb.horizons_s], np.int64),
            "rewards": lb.rewards[None],
            "best": lb.best[None],
            "valid": lb.valid[None],
            "exit_kind": lb.exit_kind[None],
        }
        parts.append((np.array([i], np.int64), row))
    return _assemble(parts, ids, problems, key)


def _without(
    rows: npt.NDArray[np.int64],
    part: Arrays,
    bad: list[tuple[int, str]],
    problems: list[str],
    key: str,
    id_of: Callable[[int], str],
) -> tuple[npt.NDArray[np.int64], Arrays]:
    """``(rows, part)`` without the rows that failed validation (each reported in ``problems``)."""
    if not bad:
        return rows, part
    problems.extend(f"{key}: entry {id_of(int(rows[j]))}: {why}" for j, why in bad)
    keep = np.ones(rows.size, bool)
    keep[[j for j, _ in bad]] = False
    return rows[keep], {k: v[keep] for k, v in part.items()}


def _assemble(
    parts: list[tuple[npt.NDArray[np.int64], Arrays]], ids: npt.NDArray[np.int64], problems: list[str], key: str
) -> Arrays:
    """Concatenate template groups back into entry order; rows of a minority width are dropped."""
    if not parts:
        return {"ids": ids[:0]}
    widths = [tuple(a.shape[1:] for name, a in sorted(p.items()) if a.ndim > 1) for _, p in parts]
    counts: dict[tuple[Any, ...], int] = {}
    for w, (rows, _) in zip(widths, parts, strict=True):
        counts[w] = counts.get(w, 0) + rows.size
    major = max(counts, key=lambda w: counts[w])
    keep = [(r, p) for w, (r, p) in zip(widths, parts, strict=True) if w == major]
    if len(keep) < len(parts):
        problems.append(f"{key}: {sum(counts.values()) - counts[major]} entries with another shape skipped")
    if len(keep) == 1 and keep[0][0].size == ids.shape[0]:  # one layout for the whole object: in order already
        rows, p = keep[0]
        if rows.size < 2 or bool((rows[1:] > rows[:-1]).all()):
            return {"ids": ids, **p}
    rows = np.concatenate([r for r, _ in keep])
    order = np.argsort(rows, kind="stable")
    out: Arrays = {"ids": ids[rows[order]]}
    for name in keep[0][1]:
        out[name] = np.concatenate([p[name] for _, p in keep])[order]
    return out


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
    arrays = (_state_arrays if kind == "states" else _label_arrays)(obj, problems, info.key)
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
) -> tuple[Arrays, list[str]]:
    """Columns of every entry of ``kind`` in range (plus ``ids`` (N, 2) ``[ms, seq]``), and the problems
    found now (problems found by an earlier load are only counted, into ``skipped[0]``). Objects may inflate
    to :func:`~archiver_svc.windows.max_inflated_bytes` of ``window_s`` (default: the archive window setting)."""
    store = as_store(source)
    limit = max_inflated_bytes(_window_ms(window_s))
    infos = list_objects(store, kind, market, start_ms, end_ms)
    problems: list[str] = []
    results: list[Arrays] = []
    n_skipped = 0
    days, from_windows = plan(store, kind, market, start_ms, end_ms, infos)
    failed: list[str] = []
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
    from_windows.extend(o for o in infos if o.key.split("/")[2] in set(failed))  # unreadable files: their windows
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
    rows = estimate_rows(store, "states", market, start_ms, end_ms, wms, tick)
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
    raw_fields: Sequence[str] | None = None,
    max_memory_gb: float | None = None,
) -> MarketData:
    """States (and labels) of ``market`` with entry time in ``[start_ms, end_ms)``; see the module doc.
    With ``raw_fields``, ``states.raw`` is a :class:`~archiver_svc.rawcols.RawColumns` of those fields only.
    Before reading, the rows and bytes are estimated; :class:`~archiver_svc.budget.TooLarge` when over
    ``max_memory_gb`` (default: the ``train_max_memory_gb`` setting)."""
    from common.settings import get_settings

    store = as_store(source)
    st = get_settings()
    est = estimate_load(store, market, start_ms, end_ms, labels=labels, raw_fields=raw_fields, window_s=window_s)
    check(f"loading {market}", est, st.train_max_memory_gb if max_memory_gb is None else max_memory_gb,
          "load a shorter range (start_ms/end_ms)")  # fmt: skip
    skipped: list[int] = []
    s, problems = load_arrays(store, "states", market, start_ms, end_ms, workers=workers, window_s=window_s,
                              skipped=skipped, raw_fields=raw_fields)  # fmt: skip
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
                                 skipped=skipped)  # fmt: skip
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
