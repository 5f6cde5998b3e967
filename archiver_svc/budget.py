"""What a load will need, before it starts: rows from the manifests of compacted days (exact) and from the
window objects of the others (an upper bound: one state per tick of each window), bytes from the columns kept.

:func:`check` raises :class:`TooLarge` with the figures and the setting to change, so a job that cannot fit is
refused up front instead of being killed by the kernel half-way through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archiver_svc.rawcols import narrow_dtype
from common.features import N_MARKET_FEATURES
from common.schema import N_RAW
from common.store import ObjectInfo, ObjectStore

SETTING = "FUSION_TRAIN_MAX_MEMORY_GB"
LABEL_BYTES_PER_HORIZON = 3 * 4 + 3  # rewards (3 actions, float32) + best + valid + exit kind


class TooLarge(MemoryError):
    """A load or a job estimated not to fit the memory budget; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Estimate:
    rows: int
    bytes: int

    @property
    def gb(self) -> float:
        return self.bytes / 1e9


def state_bytes(raw_fields: Sequence[str] | None) -> int:
    """Bytes one loaded state holds: ids (16), flags (4), slug index (4), features (float32), raw fields."""
    raw = N_RAW * 8 if raw_fields is None else sum(narrow_dtype(f).itemsize for f in raw_fields)
    return 16 + 4 + 4 + 4 * N_MARKET_FEATURES + raw


def label_bytes(n_horizons: int) -> int:
    return 16 + 8 * n_horizons + LABEL_BYTES_PER_HORIZON * n_horizons


def estimate_rows(
    store: ObjectStore,
    kind: str,
    market: str,
    start_ms: int | None,
    end_ms: int | None,
    window_ms: int,
    tick_ms: int,
    infos: list[ObjectInfo],
    planned: tuple[list[tuple[str, dict[str, Any]]], list[ObjectInfo]] | None = None,
) -> int:
    """Rows of ``kind`` a load of the range will return at most, given the range's window objects ``infos``
    (:func:`archiver_svc.reader.list_objects`), or the range's ``planned`` (days, windows) when already known."""
    if planned is None:
        from archiver_svc.colread import plan  # pyarrow only when an estimate is asked for

        planned = plan(store, kind, market, start_ms, end_ms, infos)
    days, windows = planned
    return sum(int(m.get("rows", 0)) for _, m in days) + len(windows) * max(1, window_ms // max(tick_ms, 1))


def check(what: str, est: Estimate, limit_gb: float, hint: str) -> None:
    """Raise :class:`TooLarge` when ``est`` exceeds ``limit_gb``."""
    if est.bytes > limit_gb * 1e9:
        raise TooLarge(
            f"{what} would need ~{est.gb:.2f} GB for {est.rows:,} states, over the limit of {limit_gb:g} GB: "
            f"raise {SETTING} (if the machine has the memory) or {hint}"
        )
