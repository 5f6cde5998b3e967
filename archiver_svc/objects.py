"""One archive object at a time: open a source as a store, list a market's objects of a range, decode one object
into validated columns (quarantining what is unusable). Used by :mod:`archiver_svc.reader` (which re-exports
these names), :mod:`archiver_svc.compact` and the tools.

Guarantees: a corrupt or truncated object, or an entry that fails its schema, is reported (``"key: reason"``),
quarantined once (:mod:`archiver_svc.quarantine`) and skipped, never an exception for bad data; an object may
inflate only to :func:`~archiver_svc.windows.max_inflated_bytes` of the window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy.typing as npt

from archiver_svc.object_columns import label_arrays, state_arrays
from archiver_svc.quarantine import move, quarantine
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
from common.log import log_once
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
        infos: list[ObjectInfo] = []
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
