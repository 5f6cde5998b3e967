"""Datasets with walk-forward splits: train / validation / hold-out in time order, whole windows,
separated by a purge gap of at least the longest label horizon.

No feature sees the future: market features are computed per state from that state's own raw
fields (``common.features.market_features``), and labels (which do look ahead, by design) are
only targets. Because each split ends at a window boundary and the next split starts at least
``purge_s`` later, no label of one split reaches into the next.

Several markets can be pooled into one dataset (:func:`pool`): each market's rows stay contiguous
and in time order, windows are segmented per market and ordered by start time, so the walk-forward
split is in time order across all markets and the purge gap holds between every pair of splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.rawcols import SlugList
from common.schema import LabelColumns, StateColumns
from trainer_svc.windows import Windows, segment

SPLITS = ("train", "val", "holdout")


@dataclass(frozen=True, slots=True)
class Split:
    name: str
    windows: npt.NDArray[np.int64]  # window indices (into Dataset.windows)
    start_ms: int
    end_ms: int
    n_states: int

    def rows(self, w: Windows) -> npt.NDArray[np.int64]:
        if self.windows.size == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(w.begin[k], w.end[k]) for k in self.windows]).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "windows": int(self.windows.size),
            "states": self.n_states,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }


@dataclass(frozen=True, slots=True)
class Part:
    """One market's rows ``[begin, end)`` in a (possibly pooled) dataset; rows are in time order."""

    market: str
    begin: int
    end: int


@dataclass(slots=True)
class Dataset:
    states: StateColumns
    labels: LabelColumns | None
    windows: Windows
    splits: dict[str, Split]
    purge_s: float
    dropped_windows: list[int] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return describe_splits(self.splits, self.windows, self.parts, self.purge_s, self.dropped_windows)


def describe_splits(
    splits: dict[str, Split], windows: Windows, parts: Sequence[Part], purge_s: float, dropped: Sequence[int]
) -> dict[str, Any]:
    """The splits as recorded in a model's meta (windows per market when several markets are pooled)."""
    out: dict[str, Any] = {
        "purge_s": purge_s,
        "purged_windows": len(dropped),
        **{k: s.describe() for k, s in splits.items()},
    }
    if len(parts) > 1:
        for name, sp in splits.items():
            begins = windows.begin[sp.windows]
            out[name]["windows_per_market"] = {
                p.market: int(np.sum((begins >= p.begin) & (begins < p.end))) for p in parts
            }
    return out


def walk_forward(
    states: StateColumns,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    purge_s: float = 300.0,
    windows: Windows | None = None,
) -> tuple[dict[str, Split], list[int], Windows]:
    """Assign whole windows to train/val/hold-out by cumulative state count, in time order (windows
    must be ordered by start time), then drop windows at the start of val and hold-out until the gap
    to the latest end in the previous split is >= ``purge_s``."""
    w = windows if windows is not None else segment(states)
    tick = states.tick_ms
    splits, dropped = split_windows(w, tick[w.begin], tick[w.end - 1], fractions, purge_s)
    return splits, dropped, w


def split_windows(
    w: Windows,
    first_ms: npt.NDArray[np.int64],
    last_ms: npt.NDArray[np.int64],
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    purge_s: float = 300.0,
) -> tuple[dict[str, Split], list[int]]:
    """:func:`walk_forward` on windows alone (``first_ms``/``last_ms``: each window's first and last tick):
    the states are not needed, so a job that never holds all of them (``trainer_svc.bounded``) splits alike."""
    nw = len(w)
    if nw < 3:
        raise ValueError(f"need at least 3 windows for a walk-forward split, got {nw}")
    frac = np.asarray(fractions, dtype=np.float64) / float(np.sum(fractions))
    cum = np.cumsum(w.lengths) / max(int(w.lengths.sum()), 1)
    cut1 = int(np.clip(np.searchsorted(cum, frac[0]) + 1, 1, nw - 2))
    cut2 = int(np.clip(np.searchsorted(cum, frac[0] + frac[1]) + 1, cut1 + 1, nw - 1))
    groups = [list(range(0, cut1)), list(range(cut1, cut2)), list(range(cut2, nw))]
    dropped: list[int] = []
    for gi in (1, 2):
        prev = groups[gi - 1]
        if not prev:
            continue
        prev_end = int(max(int(last_ms[k]) for k in prev))
        while groups[gi] and int(first_ms[groups[gi][0]]) - prev_end < purge_s * 1000:
            dropped.append(groups[gi].pop(0))
    splits: dict[str, Split] = {}
    for name, g in zip(SPLITS, groups, strict=True):
        idx = np.asarray(g, dtype=np.int64)
        if idx.size == 0:
            raise ValueError(f"split {name} is empty after purging (too little data for purge_s={purge_s})")
        splits[name] = Split(
            name=name,
            windows=idx,
            start_ms=int(first_ms[idx].min()),
            end_ms=int(last_ms[idx].max()),
            n_states=int(w.lengths[idx].sum()),
        )
    return splits, dropped


def make_dataset(
    states: StateColumns,
    labels: LabelColumns | None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    purge_s: float | None = None,
    windows: Windows | None = None,
    parts: Sequence[Part] | None = None,
) -> Dataset:
    """A dataset; ``purge_s`` defaults to the longest label horizon (at least 60 s). ``windows`` and
    ``parts`` come from :func:`pool` for several markets (default: one market, segmented here)."""
    if labels is not None and len(labels) != len(states):
        raise ValueError(f"labels ({len(labels)}) and states ({len(states)}) differ in length")
    if labels is not None and not np.array_equal(labels.tick_ms, states.tick_ms):
        raise ValueError("labels are not aligned with states (tick_ms differ)")
    if purge_s is None:
        purge_s = float(max(labels.horizons_s)) if labels is not None and labels.horizons_s else 60.0
    splits, dropped, w = walk_forward(states, fractions, purge_s, windows)
    return Dataset(
        states=states,
        labels=labels,
        windows=w,
        splits=splits,
        purge_s=purge_s,
        dropped_windows=dropped,
        parts=list(parts) if parts else [Part("", 0, len(states))],
    )


def pool(
    markets: Sequence[tuple[str, StateColumns, LabelColumns | None]],
) -> tuple[StateColumns, LabelColumns | None, Windows, list[Part]]:
    """Several markets as one set of columns for :func:`make_dataset`.

    Each market's rows stay contiguous and in time order (``Part``); its windows are segmented on
    its own rows (never across markets) and all windows are ordered by (start time, market order), so
    episodes never mix markets and a walk-forward split is in time order across markets. Labels are
    pooled only when every market has them (with the same horizons); else ``None``."""
    if not markets:
        raise ValueError("nothing to pool")
    parts: list[Part] = []
    wins: list[tuple[Windows, int, int]] = []
    off = 0
    for name, st, _ in markets:
        w = segment(st)
        wins.append((w, off, len(parts)))
        parts.append(Part(name, off, off + len(st)))
        off += len(st)
    states = StateColumns(
        tick_ms=np.concatenate([st.tick_ms for _, st, _ in markets]),
        raw=_concat_raw([st.raw for _, st, _ in markets]),
        features=np.concatenate([st.features for _, st, _ in markets]),
        flags=np.concatenate([st.flags for _, st, _ in markets]),
        slugs=SlugList.concat([st.slugs for _, st, _ in markets]),
    )
    labels: LabelColumns | None = None
    lcs = [lc for _, _, lc in markets]
    if all(lc is not None for lc in lcs):
        ls = [lc for lc in lcs if lc is not None]
        if len({lc.horizons_s for lc in ls}) != 1:
            raise ValueError(f"markets have different label horizons: {[lc.horizons_s for lc in ls]}")
        labels = LabelColumns(
            tick_ms=np.concatenate([lc.tick_ms for lc in ls]),
            horizons_s=ls[0].horizons_s,
            rewards=np.concatenate([lc.rewards for lc in ls]),
            best=np.concatenate([lc.best for lc in ls]),
            valid=np.concatenate([lc.valid for lc in ls]),
            exit_kind=np.concatenate([lc.exit_kind for lc in ls]),
        )
    windows, _ = merge_windows(wins)
    return states, labels, windows, parts


def merge_windows(wins: Sequence[tuple[Windows, int, int]]) -> tuple[Windows, npt.NDArray[np.int64]]:
    """Windows of several markets (``(windows, row offset, market index)`` each) as one, ordered by (start
    time, market order), and the order applied (index into the concatenated windows)."""
    begin = np.concatenate([w.begin + o for w, o, _ in wins])
    end = np.concatenate([w.end + o for w, o, _ in wins])
    start_s = np.concatenate([w.start_s for w, _, _ in wins])
    market_ix = np.concatenate([np.full(len(w), k, np.int64) for w, _, k in wins])
    order = np.lexsort((market_ix, start_s))  # by start time, then market order
    windows = Windows(
        begin=begin[order].astype(np.int64),
        end=end[order].astype(np.int64),
        start_s=start_s[order],
        end_s=np.concatenate([w.end_s for w, _, _ in wins])[order],
        settle=np.concatenate([w.settle for w, _, _ in wins])[order],
    )
    return windows, order.astype(np.int64)


def _concat_raw(raws: list[Any]) -> Any:
    """Raw fields of several markets: the loaded fields only (RawColumns), or the full matrices."""
    from archiver_svc.rawcols import RawColumns

    if all(isinstance(r, RawColumns) for r in raws):
        return RawColumns.concat(raws)
    return np.concatenate([r.dense() if isinstance(r, RawColumns) else r for r in raws])


def align_labels(states: StateColumns, labels: LabelColumns) -> LabelColumns:
    """Labels reordered to the states' rows by tick; rows without a label become invalid."""
    if np.array_equal(labels.tick_ms, states.tick_ms):
        return labels
    pos = np.searchsorted(labels.tick_ms, states.tick_ms)
    pos_c = np.clip(pos, 0, max(len(labels) - 1, 0))
    hit = (
        (pos < len(labels)) & (labels.tick_ms[pos_c] == states.tick_ms) if len(labels) else np.zeros(len(states), bool)
    )
    n, h = len(states), len(labels.horizons_s)
    rewards = np.zeros((n, h, 3), np.float32)
    best = np.full((n, h), -1, np.int8)
    valid = np.zeros((n, h), np.uint8)
    kind = np.full((n, h), 255, np.uint8)
    if hit.any():
        rewards[hit], best[hit] = labels.rewards[pos_c[hit]], labels.best[pos_c[hit]]
        valid[hit], kind[hit] = labels.valid[pos_c[hit]], labels.exit_kind[pos_c[hit]]
    return LabelColumns(states.tick_ms.copy(), labels.horizons_s, rewards, best, valid, kind)


def horizon_index(labels: LabelColumns, horizon_s: int) -> int:
    """Index of ``horizon_s`` in the labels' horizons (ValueError with the choices if absent)."""
    try:
        return list(labels.horizons_s).index(int(horizon_s))
    except ValueError:
        raise ValueError(f"horizon {horizon_s}s not labelled; have {list(labels.horizons_s)}") from None
