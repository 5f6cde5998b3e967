"""Where archived states came from: recorded (live observers) or imported (``fusion import`` / ``fusion backfill``).

Imported objects live under their own prefix, ``imported/`` + the usual archive key
(``imported/market-data/{market}/{date}/{window}.msgpack.gz``, ``imported/labels/...``), so an import can never
overwrite, or be mistaken for, a recorded window. :class:`PrefixedStore` is a view of a store under a prefix:
the reader, the windows' key grammar and the quarantine work on it unchanged.

Guarantees: every key a :class:`PrefixedStore` touches starts with its prefix (keys are checked by the inner
store); :func:`merge_origins` keeps a recorded state wherever both origins hold the same tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.market_data import MarketData
from archiver_svc.rawcols import RawColumns, SlugList
from common.schema import LabelColumns, StateColumns
from common.store import ObjectInfo, ObjectStore

IMPORTED_PREFIX = "imported/"
ORIGINS = ("recorded", "imported", "both")


class PrefixedStore(ObjectStore):
    """``inner`` seen through ``prefix``: key ``k`` here is ``prefix + k`` there."""

    def __init__(self, inner: ObjectStore, prefix: str = IMPORTED_PREFIX) -> None:
        if not prefix.endswith("/") or prefix.startswith("/"):
            raise ValueError(f"prefix must be relative and end with '/': {prefix!r}")
        self.inner, self.prefix = inner, prefix
        self.url = f"{inner.url.rstrip('/')}/{prefix}"

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(self.prefix + key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(self.prefix + key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(self.prefix + key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        n = len(self.prefix)
        for o in self.inner.list(self.prefix + prefix):
            yield ObjectInfo(o.key[n:], o.size, o.etag)

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + key)


def imported_view(store: ObjectStore) -> PrefixedStore:
    """The imported part of ``store``."""
    return PrefixedStore(store, IMPORTED_PREFIX)


def origin_stores(store: ObjectStore, origin: str) -> list[tuple[ObjectStore, bool]]:
    """``[(store, columnar)]`` to read for ``origin``, recorded first: compacted days (``fusion compact``)
    exist for the recorded origin only, so the imported view is read from its windows (``columnar=False``)."""
    check_origin(origin)
    parts: list[tuple[ObjectStore, bool]] = [] if origin == "imported" else [(store, True)]
    if origin != "recorded":
        parts.append((imported_view(store), False))
    return parts


def check_origin(origin: str) -> str:
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
    return origin


def _merge_rows(t_rec: npt.NDArray[np.int64], t_imp: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], int]:
    """(order into concat(recorded, imported) sorted by tick, recorded first on ties, then de-duplicated; count
    of imported rows dropped because a recorded one has their tick)."""
    ticks = np.concatenate([t_rec, t_imp])
    pri = np.concatenate([np.zeros(t_rec.size, np.int8), np.ones(t_imp.size, np.int8)])
    order = np.lexsort((pri, ticks))
    st = ticks[order]
    keep = np.ones(st.size, bool)
    keep[1:] = st[1:] != st[:-1]
    return order[keep], int((~keep).sum())


def _concat_raw(a: Any, b: Any) -> Any:
    """Raw fields of both origins: the loaded fields only (:class:`RawColumns`), or the full matrices."""
    if isinstance(a, RawColumns) and isinstance(b, RawColumns):
        return RawColumns.concat([a, b])
    return np.concatenate([r.dense() if isinstance(r, RawColumns) else r for r in (a, b)])


def merge_market(recorded: MarketData, imported: MarketData) -> MarketData:
    """Recorded and imported rows of one market as one, sorted by tick; a recorded row wins a shared tick."""
    a, b = recorded.states, imported.states
    problems = recorded.problems + imported.problems
    if len(b) == 0 or len(a) == 0:
        base = recorded if len(b) == 0 else imported
        return MarketData(base.market, base.states, base.labels, problems, recorded.skipped + imported.skipped)
    if a.features.shape[1] != b.features.shape[1]:
        problems.append(f"{recorded.market}: imported states have another feature width; recorded only")
        return MarketData(recorded.market, a, recorded.labels, problems, recorded.skipped + imported.skipped)
    sel, dropped = _merge_rows(a.tick_ms, b.tick_ms)
    slugs = SlugList.concat([a.slugs, b.slugs])
    states = StateColumns(
        tick_ms=np.concatenate([a.tick_ms, b.tick_ms])[sel],
        raw=_concat_raw(a.raw, b.raw)[sel],
        features=np.concatenate([a.features, b.features])[sel],
        flags=np.concatenate([a.flags, b.flags])[sel],
        slugs=SlugList(slugs.table, slugs.idx[sel]),
    )
    if dropped:
        problems.append(f"{recorded.market}: {dropped} imported states shadowed by recorded ones")
    labels = None
    la, lb = recorded.labels, imported.labels
    if la is not None and lb is not None and la.horizons_s == lb.horizons_s:
        lsel, _ = _merge_rows(la.tick_ms, lb.tick_ms)
        labels = LabelColumns(
            np.concatenate([la.tick_ms, lb.tick_ms])[lsel],
            la.horizons_s,
            np.concatenate([la.rewards, lb.rewards])[lsel],
            np.concatenate([la.best, lb.best])[lsel],
            np.concatenate([la.valid, lb.valid])[lsel],
            np.concatenate([la.exit_kind, lb.exit_kind])[lsel],
        )
    return MarketData(recorded.market, states, labels, problems, recorded.skipped + imported.skipped)
