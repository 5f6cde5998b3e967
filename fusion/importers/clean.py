"""Cleaning a table in the generic layout (pure): times, windows, timezone errors, bad books, duplicates.

Every row is either kept (possibly with fields set absent, counted as *fixed* with the reason) or dropped
(counted with the reason); :class:`Report` keeps the counts. Nothing here raises for bad values.

Rules (in order):

* a row whose ``time``/``window_start``/``window_end`` is unparsable, or whose window is empty, is dropped;
* **timezone**: when most rows lie outside their window but shifting every time by a whole number of hours
  ``k`` (|k| <= 14) puts at least 90 % of them inside, the file was written in another timezone: every time is
  shifted by ``-k`` h (fixed, reported); rows still outside their window are dropped (``outside_window``);
* times are snapped *up* to the tick grid (a tick shows what was known by its time, never a later row, as the
  observer's would); a row that so reaches its window's end is dropped (``at_window_end``: that tick belongs
  to the next window); rows out of order are sorted (fixed, ``out_of_order``), and of
  rows on the same tick the last one read is kept (``duplicate_tick``);
* prices: 0 (the book emptied, e.g. near expiry) or outside (0, 1) is absent (``zero_price`` /
  ``price_out_of_range``); a 0.01/0.99 book is the venue's placeholder for "no orders" (``placeholder_book``);
  a bid above the ask is absent (``crossed_book``);
* a row with no Polymarket price and no Binance price left is dropped (``empty_row``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fusion.importers.layout import BAD_TIME, Table

HOUR_MS = 3_600_000
NICE_TICKS_MS = (50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000)
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Report:
    """What an import did: rows read, kept, fixed and dropped (by reason), states per window, gaps."""

    source: str = ""
    market: str = ""
    layout: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    tick_ms: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    timezone_shift_h: int = 0
    states_per_window: dict[str, int] = field(default_factory=dict)
    objects_written: int = 0
    labels_written: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, str] = field(default_factory=dict)
    dropped_rows: dict[str, list[int]] = field(default_factory=dict)  # file rows (0 = first data row), first 20

    def drop(self, reason: str, n: int, rows: npt.NDArray[np.int64] | None = None) -> None:
        if n:
            self.dropped[reason] += int(n)
            if rows is not None:
                kept = self.dropped_rows.setdefault(reason, [])
                kept += [int(r) for r in rows[: max(0, 20 - len(kept))].tolist()]

    def fix(self, reason: str, n: int) -> None:
        if n:
            self.fixed[reason] += int(n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "market": self.market, "layout": self.layout, "rows_read": self.rows_read,
            "rows_kept": self.rows_kept, "tick_ms": self.tick_ms, "dropped": dict(self.dropped),
            "fixed": dict(self.fixed), "timezone_shift_h": self.timezone_shift_h, "notes": self.notes,
            "states_written": sum(self.states_per_window.values()), "windows": len(self.states_per_window),
            "states_per_window": self.states_per_window, "objects_written": self.objects_written,
            "labels_written": self.labels_written, "gaps": self.gaps, "fidelity": self.fidelity,
            "dropped_rows": self.dropped_rows,
        }  # fmt: skip


def infer_tick_ms(t: I64) -> int:
    """The tick of a recording: its median interval, rounded to the nearest allowed tick."""
    u = np.unique(t)
    if u.size < 2:
        return 1000
    med = float(np.median(np.diff(u)))
    return min(NICE_TICKS_MS, key=lambda x: abs(np.log(x) - np.log(max(med, 1.0))))


def _inside(t: I64, ws: I64, we: I64) -> B:
    return (t >= ws) & (t < we)


def timezone_shift(t: I64, ws: I64, we: I64) -> int:
    """Hours ``k`` to subtract from every time so rows fall in their windows (0 when they already do)."""
    if t.size == 0 or float(_inside(t, ws, we).mean()) >= 0.5:
        return 0
    best, frac = 0, float(_inside(t, ws, we).mean())
    for k in range(-14, 15):
        f = float(_inside(t - k * HOUR_MS, ws, we).mean())
        if f > frac:
            best, frac = k, f
    return best if frac >= 0.9 else 0


def select(tab: Table, keep: B) -> Table:
    return take(tab, np.flatnonzero(keep))


def take(tab: Table, idx: I64) -> Table:
    return Table(
        int(idx.size),
        {k: v[idx] for k, v in tab.times.items()},
        {k: v[idx] for k, v in tab.num.items()},
        {k: [v[i] for i in idx.tolist()] for k, v in tab.text.items()},
        tab.source,
        tab.derived,
        tab.files,
    )


def clean_times(tab: Table, rep: Report, tick_ms: int | None) -> tuple[Table, I64]:
    """Rows with valid times inside their windows, sorted and unique per tick; and each row's tick."""
    tab.times.setdefault("row", np.arange(tab.n, dtype=np.int64))
    t, ws, we = tab.times["time"], tab.times["window_start"], tab.times["window_end"]
    ok = (t != BAD_TIME) & (ws != BAD_TIME) & (we != BAD_TIME) & (we > ws)
    rep.drop("bad_time_or_window", int((~ok).sum()), tab.times["row"][~ok])
    tab = select(tab, ok)
    t, ws, we = tab.times["time"], tab.times["window_start"], tab.times["window_end"]
    files = tab.times.get("file", np.zeros(tab.n, np.int64))
    t = t.copy()
    for fid in np.unique(files).tolist():  # per file: a logger may have written one day in local time only
        m = files == fid
        k = timezone_shift(t[m], ws[m], we[m])
        if k:
            t[m] -= k * HOUR_MS
            rep.timezone_shift_h = rep.timezone_shift_h or k
            rep.fix("timezone_shift", int(m.sum()))
            name = tab.files[fid] if fid < len(tab.files) else tab.source
            rep.notes.append(f"{name}: times were {k:+d} h off their windows (written in another timezone); "
                             f"shifted by {-k:+d} h")  # fmt: skip
    tab.times["time"] = t
    inside = _inside(t, ws, we)
    if tab.n and float(inside.mean()) < 0.5:
        rep.notes.append(f"{int((~inside).sum())} of {tab.n} rows lie outside their windows and no whole-hour "
                         "shift explains it: check the file's time columns")  # fmt: skip
    rep.drop("outside_window", int((~inside).sum()), tab.times["row"][~inside])
    tab = select(tab, inside)
    t = tab.times["time"]
    rep.fix("out_of_order", int((np.diff(t) < 0).sum()) if t.size > 1 else 0)
    rep.tick_ms = tick = tick_ms or infer_tick_ms(t)
    ticks = t + (-t) % tick
    ends = tab.times["window_end"]
    ok = ticks < ends
    if not ok.all():
        rep.drop("at_window_end", int((~ok).sum()), tab.times["row"][~ok])
        tab, t, ticks = select(tab, ok), t[ok], ticks[ok]
    order = np.lexsort((np.arange(t.size), ticks))
    st = ticks[order]
    last = np.ones(st.size, bool)
    last[:-1] = st[1:] != st[:-1]
    rep.drop("duplicate_tick", int((~last).sum()), tab.times["row"][order[~last]])
    idx = order[last]  # sorted by tick, the last row read of each tick
    return take(tab, idx), ticks[idx]


def clean_books(tab: Table, rep: Report) -> None:
    """Absent (NaN) prices where the book is empty, a placeholder, crossed or out of range (in place)."""
    for tok in ("up", "down"):
        bid, ask = tab.num.get(f"{tok}_bid"), tab.num.get(f"{tok}_ask")
        for name, px in ((f"{tok}_bid", bid), (f"{tok}_ask", ask)):
            if px is None:
                continue
            zero = px == 0.0
            rep.fix("zero_price", int(zero.sum()))
            bad = ~zero & np.isfinite(px) & ((px < 0.0) | (px > 1.0))
            rep.fix("price_out_of_range", int(bad.sum()))
            px[zero | bad] = np.nan
            for sz in (f"{name}_size",):
                if sz in tab.num:
                    tab.num[sz][np.isnan(px)] = np.nan
        if bid is None or ask is None:
            continue
        placeholder = (bid <= 0.01) & (ask >= 0.99)
        crossed = bid > ask
        rep.fix("placeholder_book", int(placeholder.sum()))
        rep.fix("crossed_book", int(crossed.sum()))
        for name in (f"{tok}_bid", f"{tok}_ask", f"{tok}_bid_size", f"{tok}_ask_size"):
            if name in tab.num:
                tab.num[name][placeholder | crossed] = np.nan


def has_any(tab: Table, names: tuple[str, ...]) -> B:
    out = np.zeros(tab.n, bool)
    for c in names:
        if c in tab.num:
            out |= np.isfinite(tab.num[c])
    return out
