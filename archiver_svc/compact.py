"""``fusion compact``: closed days of the archive's windows -> one Parquet file + manifest per (kind, market, day).

Guarantees:
* only closed days: a day is compacted once its last window cannot change any more (the day ended at least one
  archive window + grace ago; for labels also the settlement wait and the longest horizon);
* idempotent and resumable: a day whose manifest names exactly the day's current window objects (key and size)
  and whose Parquet file is present with that size is skipped; any other day is (re)written, Parquet first and
  the manifest last, with deterministic bytes, so a crash anywhere is repaired by running the job again;
* bad window objects or entries are quarantined by the reader (:mod:`archiver_svc.reader`) and reported; they
  never stop the job; the windows stay the landing format and the columnar files can always be rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from archiver_svc import coltrades, columnar
from archiver_svc.compact_result import Result
from archiver_svc.objects import _load_one, _window_ms, as_store
from archiver_svc.reader import load_arrays
from archiver_svc.trades import load_trades
from archiver_svc.windows import PREFIXES, max_inflated_bytes, parse_key, utc_date
from common.log import kv, log_once
from common.names import check_name, is_valid_name
from common.store import ObjectInfo, ObjectStore

log = logging.getLogger("archiver.compact")
Arrays = dict[str, Any]
DAY_MS = 86_400_000


def archived_markets(store: ObjectStore) -> list[str]:
    """Markets with state or label windows in the store (folder listings: no key listed)."""
    out = {m for kind in ("states", "labels") for m in store.list_folders(PREFIXES[kind] + "/")}
    return sorted(m for m in out if is_valid_name(m))


def archived_traders(store: ObjectStore) -> list[str]:
    """Traders with archived records in the store."""
    return sorted(t for t in store.list_folders(PREFIXES["trades"] + "/") if is_valid_name(t))


def _own_day(key: str) -> str | None:
    """The day folder of window object ``key`` when it is its window's UTC day, else None (not a window, or a key
    written by hand or by something else into another folder: logged once, never compacted)."""
    p = parse_key(key)
    if p is None:
        return None
    day = key.split("/")[2]
    if day != utc_date(p[2]):
        log_once(log, f"foreign:{key}", "object outside its window's day folder; not compacted", obj=key)
        return None
    return day


def day_sources(store: ObjectStore, kind: str, market: str) -> dict[str, list[tuple[str, int]]]:
    """``{day: [(key, size), ...]}`` of a market's (for trades: a trader's) window objects in their own day's
    folder (:func:`_own_day`), so a stray key never stops a pass."""
    out: dict[str, list[tuple[str, int]]] = {}
    for o in store.list(f"{PREFIXES[kind]}/{check_name(market)}/"):
        day = _own_day(o.key)
        if day is not None:
            out.setdefault(day, []).append((o.key, int(o.size)))
    return out


def closed_after_ms(kind: str) -> int:
    """How long after a day's end its windows of ``kind`` can still change."""
    from common.settings import get_settings

    s = get_settings()
    ms = (s.archive_window_s + s.archive_grace_s) * 1000
    if kind == "labels":
        ms += (s.label_settle_wait_s + max(s.label_horizons_s, default=0) + s.archive_window_s) * 1000
    return ms


def _day_start(day: str) -> int:
    return int(np.datetime64(day, "ms").astype(np.int64))


def _sources_digest(sources: list[tuple[str, int]] | list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps([[k, int(z)] for k, z in sorted(map(tuple, sources))]).encode()).hexdigest()


class ManifestCache:
    """What each day's manifest says that :func:`is_current` needs (layout version, a digest of its sources, the
    Parquet file's bytes), by manifest key and size: a pass over unchanged days costs a listing per market and
    kind, not a GET per day. Bounded (cleared past ``cap`` entries, ~200 B each). A manifest rewritten by another
    process with the same size is at worst taken for its old content: the day is then rewritten once more."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        self._d: dict[str, tuple[int, tuple[Any, str, Any]]] = {}

    def summary(self, store: ObjectStore, key: str, size: int | None) -> tuple[Any, str, Any] | None:
        got = self._d.get(key)
        if got is not None and size is not None and got[0] == size:
            return got[1]
        try:
            data = store.get(key)
        except KeyError:
            return None
        m = columnar.parse_manifest(data)
        return None if m is None else self.remember(key, data, m)

    def remember(self, key: str, data: bytes, m: dict[str, Any]) -> tuple[Any, str, Any]:
        """Record manifest ``m`` (stored as ``data`` at ``key``); returns its summary."""
        out = (m.get("version"), _sources_digest(m["sources"]), m.get("bytes"))
        if len(self._d) >= self.cap:
            self._d.clear()
        self._d[key] = (len(data), out)
        return out


MANIFESTS = ManifestCache()  # this process's (the compactor service's passes share it)


def is_current(store: ObjectStore, kind: str, market: str, day: str, sources: list[tuple[str, int]],
               listed: dict[str, int] | None = None, cache: ManifestCache | None = None) -> bool:  # fmt: skip
    """True when the day's manifest (of the current layout) names exactly ``sources`` and its Parquet file is there
    with its size; ``listed``: the sizes of the market's columnar objects when the caller listed them."""
    mkey, pkey = columnar.day_key(kind, market, day, columnar.MANIFEST), columnar.day_key(kind, market, day)
    if listed is None:
        listed = {o.key: int(o.size) for o in store.list(pkey)}
        listed.update((o.key, int(o.size)) for o in store.list(mkey))
    if pkey not in listed or mkey not in listed:
        return False
    got = (cache or MANIFESTS).summary(store, mkey, listed[mkey])  # an older layout's day is rewritten
    return (
        got is not None
        and got[0] == columnar.COLUMNAR_VERSION
        and got[1] == _sources_digest(sources)
        and (got[2] == listed[pkey])
    )


def _day_objects(store: ObjectStore, kind: str, market: str, day: str) -> list[ObjectInfo]:
    """The day folder's window objects whose window starts on that day (see :func:`day_sources`)."""
    return [o for o in store.list(f"{PREFIXES[kind]}/{market}/{day}/") if _own_day(o.key) == day]


def _listed_day(store: ObjectStore, kind: str, market: str, day: str) -> list[tuple[str, int]]:
    """The day's window objects (key, size), listed again (after the reader quarantined bad ones)."""
    return sorted((o.key, int(o.size)) for o in _day_objects(store, kind, market, day))


def compact_day(store: ObjectStore, kind: str, market: str, day: str, tick_s: float, res: Result,
                srcs: list[tuple[str, int]] | None = None, listed: dict[str, int] | None = None) -> None:  # fmt: skip
    """Compact one closed day (or skip it when its manifest is current); ``srcs``: the day's objects and
    ``listed``: the market's columnar objects (key -> size), when the caller listed them already."""
    srcs = _listed_day(store, kind, market, day) if srcs is None else srcs
    name = f"{kind}/{market}/{day}"
    if not srcs or is_current(store, kind, market, day, srcs, listed):
        res.skipped.append(name)
        return
    start = _day_start(day)
    if kind == "trades":
        got = load_trades(store, market, start, start + DAY_MS)
        res.problems.extend(got.problems)
        table = coltrades.trades_table(got.ids, got.records)
        ticks = table.column("ms").to_numpy()
        _put(store, kind, market, day, columnar.encode_table(table), ticks, srcs, tick_s, (), res)
        return
    if kind == "states":
        streamed = _states_streamed(store, market, day, res)
        if streamed is not None:
            srcs = _listed_day(store, kind, market, day)  # after quarantine moved bad objects away
            _put(store, kind, market, day, streamed[0], streamed[1], srcs, tick_s, (), res)
            return
    arrays, problems = load_arrays(store, kind, market, start, start + DAY_MS)
    res.problems.extend(problems)
    srcs = _listed_day(store, kind, market, day)  # after quarantine moved bad objects away
    if not arrays:
        arrays = {"ids": np.zeros((0, 2), np.int64)}
    horizons: tuple[int, ...] = ()
    if kind == "states":
        if "raw" not in arrays:
            res.skipped.append(name)
            return
        table = columnar.states_table(arrays)
    else:
        if "horizons" not in arrays:
            res.skipped.append(name)
            return
        hs = arrays["horizons"]
        if hs.shape[0] > 1 and not bool((hs == hs[0]).all()):
            sets, inv, counts = np.unique(hs, axis=0, return_inverse=True, return_counts=True)
            keep = inv.reshape(-1) == int(np.argmax(counts))
            res.problems.append(f"{name}: {int((~keep).sum())} labels with other horizons than the day's skipped")
            arrays = {k: v[keep] for k, v in arrays.items()}
        table, horizons = columnar.labels_table(arrays)
    _write(store, kind, market, day, table, srcs, tick_s, horizons, res)


def _window_columns(store: ObjectStore, info: ObjectInfo, limit: int) -> tuple[Arrays, list[str]]:
    """One window's validated columns with the raw fields transposed (one row per field), in a worker thread."""
    arrays, probs, _ = _load_one(store, info, "states", limit)
    if arrays and "raw" in arrays:
        arrays["raw_t"] = np.ascontiguousarray(arrays.pop("raw").T)
    return arrays, probs


# Threads decoding a day's windows while this thread encodes its Parquet; days compacted at once. Measured on
# 2 cores (benchmarks/scale.py, four days in one pass): 1 decode thread 360-400k states/s, 2 decode threads
# 300-360k (more CPU lost to the GIL's hand-offs than gained); 2 days at once 340-380k. On more cores, raise
# ``days_in_flight`` (`fusion compact --days-in-flight`).
DECODE_THREADS = 1
CHUNK_WINDOWS = 36  # windows per row group when streaming (6 h of 10-minute windows)


def _states_streamed(store: ObjectStore, market: str, day: str, res: Result) -> tuple[bytes, np.ndarray] | None:
    """The day's states as Parquet bytes (and their ticks), encoded chunk by chunk in this thread while
    ``DECODE_THREADS`` worker threads decode and validate the next windows; None when windows overlap or a chunk
    does not fit the first one's column types or feature width: the caller then takes the general path (sort,
    dedupe, one table). Memory: at most the day's decoded windows (~150 MB at 0.5 s ticks)."""
    infos = sorted(_day_objects(store, "states", market, day), key=lambda o: o.key.rsplit("/", 1)[1].zfill(40))
    limit = max_inflated_bytes(_window_ms(None))
    parts: list[Arrays] = []
    last = (-1, -1)
    problems: list[str] = []
    out = columnar.DayWriter()
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        results = pool.map(lambda i: _window_columns(store, i, limit), infos)
        for k, (arrays, probs) in enumerate(results):
            problems.extend(probs)
            if arrays and arrays["ids"].shape[0] and "raw_t" in arrays:
                ids = arrays["ids"]
                if (int(ids[0, 0]), int(ids[0, 1])) <= last:
                    return None
                last = (int(ids[-1, 0]), int(ids[-1, 1]))
                parts.append(arrays)
            if parts and ((k + 1) % CHUNK_WINDOWS == 0 or k + 1 == len(infos)):
                if not out.add(_join(parts)):
                    return None
                parts = []
    res.problems.extend(problems)
    for p in problems:
        log_once(log, f"problem:{p}", "archive problem; skipped (quarantined)", problem=p)
    if not out.rows:
        return None
    return out.finish(), np.concatenate(out.ticks)


def _join(parts: list[Arrays]) -> Arrays:
    """Windows' columns as one chunk (raw fields stay transposed: one contiguous row per field)."""
    table = np.unique(np.concatenate([p["slug_table"] for p in parts]))
    return {
        "ids": np.concatenate([p["ids"] for p in parts]),
        "tick_ms": np.concatenate([p["tick_ms"] for p in parts]),
        "flags": np.concatenate([p["flags"] for p in parts]),
        "features": np.concatenate([p["features"] for p in parts]),
        "raw_t": np.concatenate([p.pop("raw_t") for p in parts], axis=1),
        "slug_idx": np.concatenate([np.asarray(np.searchsorted(table, p["slug_table"]))[p["slug_idx"]] for p in parts]),
        "slug_table": table,
    }


def _write(store: ObjectStore, kind: str, market: str, day: str, table: pa.Table, srcs: list[tuple[str, int]],
           tick_s: float, horizons: tuple[int, ...], res: Result) -> None:  # fmt: skip
    _put(store, kind, market, day, columnar.encode_table(table), table.column("tick_ms").to_numpy(), srcs, tick_s,
         horizons, res)  # fmt: skip


def _put(store: ObjectStore, kind: str, market: str, day: str, data: bytes, ticks: np.ndarray,
         srcs: list[tuple[str, int]], tick_s: float, horizons: tuple[int, ...], res: Result) -> None:  # fmt: skip
    """Parquet first, manifest last (a manifest always names a complete file)."""
    man = columnar.manifest(kind, market, day, data, ticks, tick_s, srcs, horizons)
    mkey, mdata = columnar.day_key(kind, market, day, columnar.MANIFEST), columnar.dumps(man)
    store.put(columnar.day_key(kind, market, day), data)
    store.put(mkey, mdata)
    MANIFESTS.remember(mkey, mdata, man)
    res.written.append(f"{kind}/{market}/{day}")
    res.rows += int(ticks.size)


DAYS_IN_FLIGHT = 1


def compact(
    store: ObjectStore,
    markets: list[str] | None = None,
    day: str | None = None,
    kinds: tuple[str, ...] = columnar.KINDS,
    now_ms: int | None = None,
    traders: list[str] | None = None,
    days_in_flight: int = DAYS_IN_FLIGHT,
) -> Result:
    """Compact every closed day (of ``markets``, default all; of ``day``, default all) not yet current; trades of
    ``traders`` (default: all archived, unless ``markets`` are named). ``days_in_flight`` days are compacted at
    once (each in its own thread; each day's file is independent of the others); the result lists them in order.
    Memory: about 150 MB per state day in flight (its decoded windows, when encoding lags decoding)."""
    from common.settings import get_settings

    t0 = time.perf_counter()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    tick_s = get_settings().tick_ms / 1000.0
    res = Result()
    named: list[tuple[str, str]] = [(m, k) for m in (markets or archived_markets(store)) for k in kinds
                                    if k != "trades"]  # fmt: skip
    if "trades" in kinds:
        named += [(t, "trades") for t in (traders or ([] if markets else archived_traders(store)))]
    todo: list[tuple[str, str, str, list[tuple[str, int]], dict[str, int]]] = []
    for name, kind in named:
        check_name(name, "trader" if kind == "trades" else "market")
        wait = closed_after_ms(kind)
        listed = {o.key: int(o.size) for o in store.list(f"{columnar.PREFIX}/{kind}/{name}/")}
        for d, srcs in sorted(day_sources(store, kind, name).items()):
            if day is not None and d != day:
                continue
            if _day_start(d) + DAY_MS + wait > now:
                res.open_days.append(f"{kind}/{name}/{d}")
                continue
            todo.append((kind, name, d, sorted(srcs), listed))

    def one(t: tuple[str, str, str, list[tuple[str, int]], dict[str, int]]) -> Result:
        r = Result()
        try:
            compact_day(store, t[0], t[1], t[2], tick_s, r, t[3], t[4])
        except Exception as e:  # one day's failure (a store error, a bug on odd data) never stops the others
            name, why = f"{t[0]}/{t[1]}/{t[2]}", f"{type(e).__name__}: {str(e)[:300]}"
            r = Result(failed=[name], problems=[f"{name}: not compacted: {why}"])
            log_once(log, f"day-failed:{name}:{type(e).__name__}", "day not compacted; retried by the next pass",
                     day=name, error=why)  # fmt: skip
        return r

    with ThreadPoolExecutor(max(1, days_in_flight)) as pool:
        for r in pool.map(one, todo):
            res.merge(r)
    res.seconds = time.perf_counter() - t0
    kv(log, logging.INFO, "compaction done", written=len(res.written), skipped=len(res.skipped),
       open=len(res.open_days), problems=len(res.problems), failed=len(res.failed), rows=res.rows)  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> int:
    from common.settings import get_settings

    ap = argparse.ArgumentParser(prog="fusion compact", description=__doc__.split("\n\n")[0])
    ap.add_argument("--market", action="append", help="market to compact (repeatable; default: all archived)")
    ap.add_argument("--trader", action="append", help="trader whose records to compact (repeatable; default: all "
                    "archived, unless --market is given)")  # fmt: skip
    ap.add_argument("--day", help="only this UTC day (YYYY-MM-DD)")
    ap.add_argument("--kind", choices=[*columnar.KINDS, "all"], default="all")
    ap.add_argument("--store", default=None, help="store URL (default: FUSION_STORE_URL)")
    ap.add_argument("--days-in-flight", type=int, default=DAYS_IN_FLIGHT, metavar="N",
                    help="days compacted at once (threads; 1 is best on 2 cores)")  # fmt: skip
    ap.add_argument("--every", type=float, default=None, metavar="S",
                    help="a service: a pass now and every S seconds until SIGTERM (compose `compactor`)")  # fmt: skip
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    store = as_store(a.store or get_settings().store_url)
    kinds = columnar.KINDS if a.kind == "all" else (a.kind,)
    try:
        for m in a.market or []:
            check_name(m, "market")
        for t in a.trader or []:
            check_name(t, "trader")
    except ValueError as e:
        print(f"fusion compact: {e}", file=sys.stderr)
        return 2
    if a.every is not None:
        from archiver_svc.compactor import serve

        return serve(lambda: compact(store, a.market, a.day, kinds, traders=a.trader,
                                     days_in_flight=a.days_in_flight), max(a.every, 1.0))  # fmt: skip
    try:
        res = compact(store, a.market, a.day, kinds, traders=a.trader, days_in_flight=a.days_in_flight)
    except ValueError as e:  # a market outside the name grammar
        print(f"fusion compact: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res.to_dict(), indent=1))
    return 1 if res.failed else 0
