"""Polymarket windows in a run of states: segmentation and settlement lookup.

A window is a maximal run of consecutive rows with the same finite ``(pm_start_s, pm_end_s)``; rows
without a known market are in no window. A window's settlement is read from any state that
reports it: ``pm_settle_up`` inside the window, or ``pm_prev_end_s``/``pm_prev_settle_up`` of a later
state. Unknown settlements are NaN (the caller decides; never guessed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.schema import RAW_INDEX, StateColumns

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Windows:
    """Row ranges ``[begin[k], end[k])`` of each window k, its bounds and settlement."""

    begin: I64
    end: I64
    start_s: F64
    end_s: F64
    settle: F64  # 1.0 Up won, 0.0 lost, NaN unknown

    def __len__(self) -> int:
        return int(self.begin.size)

    @property
    def lengths(self) -> I64:
        return self.end - self.begin


def settlements(raw: F64) -> dict[float, float]:
    """Window end (unix s) -> settlement value, from every state that reports one."""
    out: dict[float, float] = {}
    pe, ps = raw[:, RAW_INDEX["pm_prev_end_s"]], raw[:, RAW_INDEX["pm_prev_settle_up"]]
    ok = np.isfinite(pe) & np.isfinite(ps)
    if ok.any():
        keys, first = np.unique(pe[ok], return_index=True)
        out.update(zip(keys.tolist(), ps[ok][first].tolist(), strict=True))
    e, s = raw[:, RAW_INDEX["pm_end_s"]], raw[:, RAW_INDEX["pm_settle_up"]]
    ok = np.isfinite(e) & np.isfinite(s)
    if ok.any():
        keys, first = np.unique(e[ok], return_index=True)
        out.update(zip(keys.tolist(), s[ok][first].tolist(), strict=True))
    return out


def segment(states: StateColumns, extra_settlements: dict[float, float] | None = None) -> Windows:
    """Windows of ``states`` (rows must be in time order)."""
    raw = states.raw
    st, en = raw[:, RAW_INDEX["pm_start_s"]], raw[:, RAW_INDEX["pm_end_s"]]
    known = np.isfinite(st) & np.isfinite(en) & (en > st)
    n = st.size
    if n == 0 or not known.any():
        z = np.zeros(0, np.int64)
        return Windows(z, z, np.zeros(0), np.zeros(0), np.zeros(0))
    key_change = np.ones(n, bool)
    key_change[1:] = (st[1:] != st[:-1]) | (en[1:] != en[:-1]) | (known[1:] != known[:-1])
    starts = np.flatnonzero(key_change)
    ends = np.append(starts[1:], n)
    keep = known[starts]
    begin, end = starts[keep].astype(np.int64), ends[keep].astype(np.int64)
    table = settlements(raw)
    if extra_settlements:
        table.update(extra_settlements)
    end_s = en[begin]
    settle = np.array([table.get(float(e), np.nan) for e in end_s], dtype=np.float64)
    return Windows(begin=begin, end=end, start_s=st[begin], end_s=end_s, settle=settle)


def window_of_rows(w: Windows, n: int) -> I64:
    """Window index of each of ``n`` rows (-1: in no window)."""
    out = np.full(n, -1, np.int64)
    for k in range(len(w)):  # one slice assignment per window (hundreds), not per row
        out[w.begin[k] : w.end[k]] = k
    return out
