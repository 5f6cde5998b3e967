"""Only the raw fields a consumer needs, each in the narrowest dtype that is exact for it.

:class:`RawColumns` stands in for ``StateColumns.raw`` (an (N, 70) float64 matrix) where only a few fields are
read: ``raw[:, RAW_INDEX[name]]``, ``raw[rows, RAW_INDEX[name]]`` and ``raw[rows]`` / ``raw[a:b]`` work as on
the matrix (values come back as float64); asking for a field that was not loaded raises ``KeyError`` naming it.

Why each kind of column has its dtype (float32 keeps 24 significant bits, ~7.2 decimal digits):

* Polymarket prices (``*_px_*``, last trades) live on a 0.001 grid in [0, 1]: float32's error there is < 6e-8,
  far below half a grid step, so rounding back to 3 decimals restores the grid value bit for bit (the canonical
  float64 of the 3-decimal price; a source value a few ulps off it, left by float arithmetic, comes back as the
  canonical one). A column with any value off that grid (by more than 1e-12) stays float64 (checked at load).
* settlement flags (0, 1, NaN): float32 is exact.
* times in unix seconds (``pm_start_s``, ``pm_end_s``, ``pm_prev_end_s``) are ~1.8e9: float32 steps by 128 s
  there, so they stay float64. Ticks are int64 ms.
* Binance prices (~1e5 with cents) need 24+ bits for the integer part alone: float32 steps by 0.0078 at 1e5,
  NOT exact at cents, so they stay float64 (the trainer does not load them: it uses the stored features).
* sizes/notionals are not loaded by the trainer; they would stay float64 (shares up to 1e6 with 2 decimals).
* features are float32 at the source (the observer computes them in float32).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from common.schema import N_RAW, RAW_FIELDS, RAW_INDEX

# what the trainer (windows, hindsight labels, replay env, baselines) reads of the raw fields
TRAIN_FIELDS: tuple[str, ...] = (
    "up_bid_px_0",
    "up_ask_px_0",
    "dn_bid_px_0",
    "dn_ask_px_0",
    "pm_start_s",
    "pm_end_s",
    "pm_settle_up",
    "pm_prev_end_s",
    "pm_prev_settle_up",
)
GRID = 1000.0  # Polymarket price grid: 0.001
ON_GRID = 1e-12  # a value this close to a grid point is that grid point (float arithmetic leaves ~1e-16)


def narrow_dtype(name: str) -> np.dtype[Any]:
    """The dtype a field is held in when it can be narrowed (see the module doc)."""
    is_pm_price = name.startswith(("up_", "dn_")) and ("_px" in name)
    if is_pm_price or name in ("pm_settle_up", "pm_prev_settle_up"):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def narrow(name: str, col: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``col`` (float64) in its narrow dtype when that round-trips exactly, else unchanged."""
    dt = narrow_dtype(name)
    col = np.asarray(col)
    if dt == np.float64 or col.dtype == dt:
        return col
    if name.endswith("settle_up"):
        ok = np.isnan(col) | (col == 0.0) | (col == 1.0)
    else:
        with np.errstate(invalid="ignore"):
            ok = np.isnan(col) | (np.abs(np.round(col * GRID) / GRID - col) <= ON_GRID)
    return col.astype(dt) if bool(ok.all()) else col.astype(np.float64)


def widen(name: str, col: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """A held column back as the exact float64 values."""
    if col.dtype == np.float64:
        return col
    out = col.astype(np.float64)
    if not name.endswith("settle_up"):
        out = np.round(out * GRID) / GRID
    return out


def narrow_raw(raw: npt.NDArray[np.float64], fields: Sequence[str] = TRAIN_FIELDS) -> RawColumns:
    """The ``fields`` of an (N, N_RAW) matrix as :class:`RawColumns` (copies: the matrix can be freed)."""
    return RawColumns({f: narrow(f, np.ascontiguousarray(raw[:, RAW_INDEX[f]])) for f in fields}, raw.shape[0])


class RawColumns:
    """Some raw fields of N states as separate 1-D arrays (see the module doc)."""

    __slots__ = ("cols", "n")

    def __init__(self, cols: Mapping[str, npt.NDArray[Any]], n: int | None = None) -> None:
        for name in cols:
            if name not in RAW_INDEX:
                raise KeyError(f"unknown raw field {name!r}")
        self.cols = dict(cols)
        self.n = int(next(iter(self.cols.values())).shape[0]) if n is None else n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, N_RAW)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return sum(int(c.nbytes) for c in self.cols.values())

    def column(self, name: str) -> npt.NDArray[np.float64]:
        try:
            return widen(name, self.cols[name])
        except KeyError:
            raise KeyError(f"raw field {name!r} was not loaded (loaded: {sorted(self.cols)})") from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            rows, col = key
            if isinstance(col, int | np.integer):
                name = RAW_FIELDS[int(col)]
                if name not in self.cols:
                    raise KeyError(f"raw field {name!r} was not loaded (loaded: {sorted(self.cols)})")
                return widen(name, self.cols[name][rows])
            return self[rows][:, col] if isinstance(col, slice) else np.stack([self[rows, int(c)] for c in col], -1)
        sub = {k: v[key] for k, v in self.cols.items()}
        return RawColumns(sub, int(next(iter(sub.values())).shape[0]))

    def dense(self) -> npt.NDArray[np.float64]:
        """(N, N_RAW) float64 with NaN for the fields not loaded (for tools; costs the full matrix)."""
        out = np.full((self.n, N_RAW), np.nan)
        for k in self.cols:
            out[:, RAW_INDEX[k]] = self.column(k)
        return out

    @staticmethod
    def concat(parts: Sequence[RawColumns]) -> RawColumns:
        names = list(parts[0].cols)
        cols = {}
        for k in names:
            arrs = [p.cols[k] for p in parts]
            dt = np.result_type(*arrs)
            cols[k] = np.concatenate([a.astype(dt, copy=False) for a in arrs])
        return RawColumns(cols, sum(p.n for p in parts))


class SlugList(Sequence[str]):
    """Per-row market slugs as a table and int32 indices (a Python list would cost a pointer per row)."""

    __slots__ = ("table", "idx")

    def __init__(self, table: Sequence[str], idx: npt.NDArray[np.int32]) -> None:
        self.table = list(table)
        self.idx = idx

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return SlugList(self.table, self.idx[i])
        return self.table[int(self.idx[i])]

    def __iter__(self) -> Iterator[str]:
        t = self.table
        return (t[k] for k in self.idx.tolist())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sequence)
            and len(self) == len(other)
            and all(a == b for a, b in zip(self, other, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def concat(parts: Sequence[Sequence[str]]) -> SlugList:
        table: dict[str, int] = {}
        idxs = []
        for p in parts:
            if isinstance(p, SlugList):
                gmap = np.array([table.setdefault(s, len(table)) for s in p.table], np.int32)
                idxs.append(gmap[p.idx] if gmap.size else p.idx.astype(np.int32))
            else:
                idxs.append(np.array([table.setdefault(s, len(table)) for s in p], np.int32))
        return SlugList(list(table), np.concatenate(idxs) if idxs else np.zeros(0, np.int32))
