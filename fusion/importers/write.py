"""Import a table in the generic layout into the archive, as the observer, archiver and labeler would have.

States are schema v2 (``common.schema.encode_state``), entry ID ``<tick_ms>-0``, grouped in the archiver's
windows (``archive_window_s``) and objects (``archiver_svc.windows.encode_object``); labels come from the
labeler's own batch function (``labeler_svc.batch.label_archive``, only rows whose label is final).

Guarantees: everything is written under ``imported/`` (:mod:`archiver_svc.origins`), never over a recorded
object; an imported window that already exists keeps its entries (new ticks are added, none replaced), so
importing the same file twice writes identical bytes; a manifest with the report and the per-field
fidelity is written under ``imported/manifests/{market}/``.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from archiver_svc.origins import imported_view
from archiver_svc.windows import ArchiveError, decode_object, encode_object, object_key, utc_date
from common.features import FEATURE_SET
from common.log import log_once
from common.names import check_name
from common.schema import (
    ORIGIN_IMPORTED,
    LabelColumns,
    PolymarketWindow,
    State,
    StateColumns,
    encode_label,
    encode_state,
)
from common.settings import Settings
from common.store import ObjectStore
from fusion.importers.binance import BinanceSide, attach_binance
from fusion.importers.build import build
from fusion.importers.clean import Report, clean_books, clean_times, has_any, select
from fusion.importers.layout import LAYOUT_VERSION, Table
from labeler_svc.batch import final_mask, label_archive

log = logging.getLogger("archiver.import")
GAP_MIN_MS = 5_000
WRITERS = 4


def _outcome(v: str) -> float:
    s = v.strip().lower()
    if s in ("up", "1", "1.0", "yes", "true"):
        return 1.0
    return 0.0 if s in ("down", "0", "0.0", "no", "false") else float("nan")


def gaps(ticks: np.ndarray, tick_ms: int, top: int = 10) -> list[dict[str, int | str]]:
    """The largest holes between consecutive ticks (longer than 5 ticks and 5 s)."""
    if ticks.size < 2:
        return []
    d = np.diff(ticks)
    big = np.flatnonzero(d > max(5 * tick_ms, GAP_MIN_MS))
    big = big[np.argsort(-d[big], kind="stable")][:top]
    return [{"from": _iso(int(ticks[i])), "to": _iso(int(ticks[i + 1])), "seconds": int(d[i]) // 1000}
            for i in sorted(big.tolist())]  # fmt: skip


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare(tab: Table, market: str, settings: Settings, tick_ms: int | None = None, rep: Report | None = None,
            origin_flag: int = ORIGIN_IMPORTED, binance: BinanceSide | None = None,
            ) -> tuple[list[State], Report, StateColumns]:  # fmt: skip
    """States (sorted by tick) of one market's table and what was done to get them; ``binance`` (daily dumps)
    is attached at each state's tick once the times are cleaned (timezone fixed, snapped), so no state sees a
    later trade."""
    check_name(market, "market")
    rep = rep or Report(source=tab.source, market=market, layout=LAYOUT_VERSION)
    rep.rows_read += tab.n
    tab, ticks = clean_times(tab, rep, tick_ms)
    if binance is not None:
        attach_binance(tab, binance, at=ticks)
    clean_books(tab, rep)
    alive = has_any(tab, ("up_bid", "up_ask", "down_bid", "down_ask", "binance_price", "binance_bid", "binance_ask"))
    rep.drop("empty_row", int((~alive).sum()), tab.times["row"][~alive])
    for what, counts in (("dropped", rep.dropped), ("fixed", rep.fixed)):
        for reason, n in counts.items():
            log_once(log, f"import:{tab.source}:{what}:{reason}", f"import: rows {what}", source=tab.source,
                     reason=reason, rows=n)  # fmt: skip
    tab, ticks = select(tab, alive), ticks[alive]
    rep.rows_kept = tab.n
    ws, we = tab.times["window_start"], tab.times["window_end"]
    outcomes: dict[int, float] = {}
    for s, o in zip(ws.tolist(), tab.text.get("outcome", [""] * tab.n), strict=True):
        v = _outcome(o)
        if np.isfinite(v):
            outcomes[s] = v
    b = build(tab, ticks, stale_binance_ms=settings.stale_binance_ms, stale_poly_ms=settings.stale_poly_ms,
              origin_flag=origin_flag, outcomes=outcomes)  # fmt: skip
    rep.fidelity = b.fidelity
    windows: dict[int, PolymarketWindow] = {}
    text = tab.text
    states = []
    for i in range(tab.n):
        s = int(ws[i])
        pm = windows.get(s)
        if pm is None:
            slug = (text.get("slug") or [""] * tab.n)[i] or f"{market.lower()}-{s // 1000}"
            pm = windows[s] = PolymarketWindow(
                slug, (text.get("condition_id") or [""] * tab.n)[i], (text.get("up_token") or [""] * tab.n)[i],
                (text.get("down_token") or [""] * tab.n)[i], s, int(we[i]))  # fmt: skip
        states.append(State(market, int(ticks[i]), b.raw[i], b.features[i], FEATURE_SET, int(b.flags[i]), pm))
    slugs = [w.slug for w in (s.pm for s in states) if w]
    cols = StateColumns(ticks.astype(np.int64), b.raw, b.features, b.flags, slugs)
    for s, n in zip(*np.unique(ws, return_counts=True), strict=True):
        rep.states_per_window[f"{_iso(int(s))}"] = int(n)
    rep.gaps = gaps(ticks, rep.tick_ms)
    horizons = [h for h in settings.label_horizons_s if h * 1000 < rep.tick_ms]
    if horizons:
        rep.notes.append(f"label horizons {horizons} s are shorter than the data's tick ({rep.tick_ms} ms): their "
                         "labels are invalid; set FUSION_LABEL_HORIZONS_S (and train with those horizons)")  # fmt: skip
    return states, rep, cols


def _merge_put(view: ObjectStore, kind: str, market: str, wstart: int, window_ms: int,
               entries: dict[str, bytes], replace: bool = False) -> int:  # fmt: skip
    """Write a window's object; entries already there are kept (``replace``: replaced by the new ones of the
    same ID). Returns the number of entries written that were not there before."""
    key = object_key(kind, market, wstart)
    try:
        old = decode_object(view.get(key), key).entries()
    except KeyError:
        old = {}
    except ArchiveError as e:  # an unreadable earlier import: replaced, and said so
        log_once(log, f"bad-import:{key}", "unreadable imported object replaced", key=key, error=str(e))
        old = {}
    new = {k: v for k, v in entries.items() if k not in old}
    merged = {**old, **entries} if replace else {**old, **new}
    if merged != old:
        view.put(key, encode_object(kind, market, wstart, window_ms, merged))
    return len(new)


def write(store: ObjectStore, market: str, states: list[State], cols: StateColumns, rep: Report,
          settings: Settings, replace: bool = False) -> Report:  # fmt: skip
    """Write the states, their final labels and the manifest under ``imported/``. ``replace`` (backfill: a rerun
    computes from at least as much data) replaces earlier imported entries of the same ticks; else they are kept.
    """
    view = imported_view(store)
    window_ms = settings.archive_window_s * 1000
    by_w: dict[int, dict[str, bytes]] = {}
    for s in states:
        by_w.setdefault(s.tick_ms - s.tick_ms % window_ms, {})[f"{s.tick_ms}-0"] = encode_state(s)
    lw: dict[int, dict[str, bytes]] = {}
    if len(cols):
        lc: LabelColumns = label_archive(cols, settings)
        for i in np.flatnonzero(final_mask(cols, settings)).tolist():
            t = int(lc.tick_ms[i])
            lw.setdefault(t - t % window_ms, {})[f"{t}-0"] = encode_label(lc.row(i, market))
    jobs = [("states", w, e) for w, e in by_w.items()] + [("labels", w, e) for w, e in lw.items()]
    with ThreadPoolExecutor(WRITERS) as pool:  # the store's fsyncs and ISA-L release the GIL
        added = list(pool.map(lambda j: _merge_put(view, j[0], market, j[1], window_ms, j[2], replace), jobs))
    for (kind, _, entries), n in zip(jobs, added, strict=True):
        if kind == "labels":
            rep.labels_written += n
            continue
        rep.objects_written += 1
        if not replace:
            rep.drop("already_imported", len(entries) - n)
    if len(cols):
        first, last = int(cols.tick_ms[0]), int(cols.tick_ms[-1])
        key = f"manifests/{market}/{utc_date(first)}/{first}-{last}.json"
        view.put(key, json.dumps(rep.to_dict(), indent=1, sort_keys=True).encode())
    return rep
