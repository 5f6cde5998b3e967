"""``fusion backfill``: a rolling market's history from the public APIs, written like ``fusion import`` (under
``imported/``) with every state flagged ``ORIGIN_BACKFILLED``.

    fusion backfill --market BTC-15M --from 2026-01-01 --to 2026-01-02 [--tick-ms 10000] [--binance-data aggTrades]

Sources (per window of the series, slug ``{asset}-updown-{5m|15m|1h|4h}-{start}``):

* Gamma ``GET /events?slug=`` -> the market's ``conditionId``, ``clobTokenIds``/``outcomes`` (JSON strings),
  ``outcomePrices`` once ``closed`` (the outcome), ``eventStartTime``/``endDate``;
* CLOB ``GET /prices-history?market={token}&startTs=&endTs=&fidelity=1`` -> ``{"history": [{"t", "p"}]}`` of
  each token: the Up/Down tops are *derived* from it as ``p -/+ 0.005`` (the tightest book the 0.01 tick
  allows; sizes absent; ``DERIVED_POLY_BOOK``);
* data API ``GET /trades?market={conditionId}&limit=&offset=`` -> each trade's ``asset``, ``price``,
  ``timestamp``: the last trade prices (recorded);
* Binance's daily dumps (``/data/{spot|futures/um}/daily/{aggTrades|klines}/...``): price and trade aggregates
  (recorded from aggTrades; derived from closed 1-minute bars with klines).

Resumable (every final answer is cached on disk; a window whose Gamma market is not closed yet is asked again),
rate-limited (``--rate`` requests/s), with a progress bar. A window that keeps failing is reported and skipped
(exit 1); a rerun fetches only what is missing and rewrites the backfilled states it recomputes (never a
recorded one: those live outside ``imported/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.markets import MarketSpec, MarketSpecError, parse_market
from common.schema import ORIGIN_BACKFILLED
from common.settings import get_settings
from common.store import open_store
from fusion.importers.binance import read_binance
from fusion.importers.clean import Report
from fusion.importers.dumps import Dumps, day_dumps
from fusion.importers.fetch import Fetcher, FetchError
from fusion.importers.layout import Table
from fusion.importers.write import prepare, write
from observer_svc.discovery import parse_iso_ms, tokens_from_gamma

HALF_TICK = 0.005
PAGE = 500
MAX_OFFSET = 20_000


@dataclass(slots=True)
class Endpoints:
    gamma: str
    clob: str
    data: str
    binance_data: str


@dataclass(slots=True)
class WindowData:
    slug: str
    cid: str
    up: str
    down: str
    start_ms: int
    end_ms: int
    outcome: str  # "up" / "down" / ""
    hist: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # token -> (t ms, p)
    trades: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # token -> (t ms, price)
    span: tuple[int, int] | None = None  # the ticks written, when only part of the window (a fixed market)


def _closed(body: bytes) -> bool:
    try:
        ev = json.loads(body)
        return bool(ev) and all(bool(m.get("closed")) for m in ev[0].get("markets") or [])
    except (ValueError, AttributeError, IndexError, TypeError):
        return False


def _series(t: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(sorted(t), dtype=np.float64).reshape(-1, 2)
    return (a[:, 0] * 1000).astype(np.int64), a[:, 1]


def _outcome(gm: dict[str, Any]) -> str:
    """ "up"/"down" of a closed market whose ``outcomePrices`` are 1 and 0 ("Yes" counts as Up), else ""."""
    try:
        outs = [str(x).lower() for x in json.loads(gm.get("outcomes") or "[]")]
        prices = [float(x) for x in json.loads(gm.get("outcomePrices") or "[]")]
    except (ValueError, TypeError):
        return ""
    if not gm.get("closed") or len(outs) != 2 or len(prices) != 2 or sorted(prices) != [0.0, 1.0]:
        return ""
    won = outs[prices.index(1.0)]
    return "up" if won in ("up", "yes") else "down" if won in ("down", "no") else ""


def _histories(f: Fetcher, ep: Endpoints, w: WindowData, closed: bool, from_ms: int, to_ms: int) -> WindowData:
    """Fill ``w``'s price histories and trades over ``[from_ms, to_ms)`` (a market still open: asked again)."""

    def done(_: bytes) -> bool:  # a window still open may get more prices and trades: ask again next run
        return closed

    for tok in (w.up, w.down):
        params = {"market": tok, "startTs": str(from_ms // 1000), "endTs": str(to_ms // 1000), "fidelity": "1"}
        h = json.loads(f.get(f"{ep.clob}/prices-history", params, done) or b"{}").get("history") or []
        w.hist[tok] = _series([(float(x["t"]), float(x["p"])) for x in h if isinstance(x, dict)])
    rows: dict[str, list[tuple[float, float]]] = {w.up: [], w.down: []}
    for off in range(0, MAX_OFFSET, PAGE):
        params = {"market": w.cid, "limit": str(PAGE), "offset": str(off), "takerOnly": "true"}
        page = json.loads(f.get(f"{ep.data}/trades", params, done) or b"[]")
        for tr in page if isinstance(page, list) else []:
            if isinstance(tr, dict) and tr.get("asset") in rows:
                rows[tr["asset"]].append((float(tr["timestamp"]), float(tr["price"])))
        if not isinstance(page, list) or len(page) < PAGE:
            break
    w.trades = {k: _series(v) for k, v in rows.items()}
    return w


def fetch_window(f: Fetcher, ep: Endpoints, spec: MarketSpec, start_s: int) -> WindowData | None:
    """One series window's market, outcome, price histories and trades; None when Gamma has no such market."""
    slug = spec.series_slug(start_s)
    body = f.get(f"{ep.gamma}/events", {"slug": slug}, final=_closed)
    events = json.loads(body) if body else []
    if not isinstance(events, list) or not events or not isinstance(events[0], dict):
        return None
    ev = events[0]
    gm = next((m for m in ev.get("markets") or [] if isinstance(m, dict) and m.get("conditionId")), None)
    toks = tokens_from_gamma(gm) if gm else None
    if gm is None or toks is None:
        return None
    start = parse_iso_ms(gm.get("eventStartTime")) or parse_iso_ms(ev.get("eventStartTime")) or start_s * 1000
    end = parse_iso_ms(ev.get("endDate")) or parse_iso_ms(gm.get("endDate")) or start + 1000 * (spec.interval_s or 0)
    w = WindowData(slug, str(gm["conditionId"]), toks[0], toks[1], start, end, _outcome(gm))
    return _histories(f, ep, w, bool(gm.get("closed")), start, end)


def fetch_fixed(f: Fetcher, ep: Endpoints, spec: MarketSpec, from_ms: int | None,
                to_ms: int | None) -> WindowData | None:  # fmt: skip
    """A fixed market (by slug or condition id) as one window: start/end from Gamma's ``/markets`` metadata
    (``eventStartTime``, else ``startDate``; ``endDate``), its outcome once closed; histories and trades over the
    window clipped to ``[from_ms, to_ms)`` when given. None when Gamma has no such market."""
    q = {"slug": spec.fixed_slug} if spec.fixed_slug else {"condition_ids": str(spec.fixed_condition_id)}

    def closed(b: bytes) -> bool:
        try:
            ms = json.loads(b)
            return bool(ms) and all(bool(m.get("closed")) for m in ms)
        except (ValueError, AttributeError, TypeError):
            return False

    ms = json.loads(f.get(f"{ep.gamma}/markets", q, final=closed) or b"[]")
    gm = ms[0] if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None
    toks = tokens_from_gamma(gm) if gm and gm.get("conditionId") else None
    if gm is None or toks is None:
        return None
    start = parse_iso_ms(gm.get("eventStartTime")) or parse_iso_ms(gm.get("startDate"))
    end = parse_iso_ms(gm.get("endDate"))
    if not start or not end or end <= start:
        raise FetchError(f"{spec.name}: Gamma gives no usable window (start {start}, end {end})")
    slug = str(gm.get("slug") or spec.fixed_slug or gm["conditionId"])
    w = WindowData(slug, str(gm["conditionId"]), toks[0], toks[1], start, end, _outcome(gm))
    lo, hi = max(start, from_ms or start), min(end, to_ms or end)
    if lo >= hi:
        raise FetchError(f"{spec.name}: --from/--to miss the market's window {start}..{end}")
    w.span = (lo, hi)
    return _histories(f, ep, w, bool(gm.get("closed")), lo, hi)


def _last(t: np.ndarray, v: np.ndarray, at: np.ndarray) -> np.ndarray:
    i = np.searchsorted(t, at, "right") - 1
    return np.where(i >= 0, v[np.maximum(i, 0)], np.nan) if t.size else np.full(at.shape, np.nan)


def table_of(windows: list[WindowData], tick_ms: int) -> Table:
    """The generic layout's columns of the windows, one row per tick."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("time", "window_start", "window_end", "up_bid", "up_ask",
                                                           "down_bid", "down_ask", "up_last", "down_last")}  # fmt: skip
    text: dict[str, list[str]] = {k: [] for k in ("outcome", "slug", "condition_id", "up_token", "down_token")}
    for w in windows:
        lo, hi = w.span or (w.start_ms, w.end_ms)
        t = np.arange(lo - lo % tick_ms + (tick_ms if lo % tick_ms else 0), hi, tick_ms, dtype=np.int64)
        parts["time"].append(t)
        parts["window_start"].append(np.full(t.size, w.start_ms))
        parts["window_end"].append(np.full(t.size, w.end_ms))
        for side, tok in (("up", w.up), ("down", w.down)):
            p = _last(*w.hist.get(tok, (np.zeros(0, np.int64), np.zeros(0))), t)
            parts[f"{side}_bid"].append(np.clip(np.round(p - HALF_TICK, 4), 0.001, 0.999))
            parts[f"{side}_ask"].append(np.clip(np.round(p + HALF_TICK, 4), 0.001, 0.999))
            parts[f"{side}_last"].append(_last(*w.trades.get(tok, (np.zeros(0, np.int64), np.zeros(0))), t))
        for k, v in (("outcome", w.outcome), ("slug", w.slug), ("condition_id", w.cid), ("up_token", w.up),
                     ("down_token", w.down)):  # fmt: skip
            text[k] += [v] * t.size
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    times = {k: cat.pop(k).astype(np.int64) for k in ("time", "window_start", "window_end")}
    derived = {"up_bid", "up_ask", "down_bid", "down_ask"}
    return Table(times["time"].size, times, {k: v.astype(np.float64) for k, v in cat.items()}, text, "backfill",
                 derived)  # fmt: skip


def _when(v: str) -> int:
    if v.isdigit():
        return int(v)
    d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return int((d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp() * 1000)


def backfill_main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion backfill", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--market",
        required=True,
        help="a rolling series (BTC-15M) or a fixed market (NAME=slug:SLUG@BTCUSDT, NAME=cid:0x..@BTCUSDT)",
    )
    ap.add_argument("--from", dest="from_", help="start (ISO time, UTC if no offset, or epoch ms); a series needs it")
    ap.add_argument("--to", help="end (exclusive); a series needs it")
    ap.add_argument("--tick-ms", type=int, default=10_000)
    ap.add_argument("--binance-data", choices=("aggTrades", "klines", "none"), default="aggTrades")
    ap.add_argument("--binance-kind", choices=("spot", "um"), default="um" if s.binance_kind == "futures" else "spot")
    ap.add_argument("--gamma-url", default=s.gamma_url)
    ap.add_argument("--clob-url", default=s.clob_url)
    ap.add_argument("--data-url", default="https://data-api.polymarket.com")
    ap.add_argument("--binance-data-url", default="https://data.binance.vision")
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second at most")
    ap.add_argument("--cache-dir", default="fusion-data/backfill-cache", help="responses kept here (resume)")
    ap.add_argument("--store-url", default=s.store_url)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)  # fmt: skip
    try:
        spec = parse_market(a.market)
        from_ms = _when(a.from_) if a.from_ else None
        to_ms = _when(a.to) if a.to else None
    except (MarketSpecError, ValueError) as e:
        ap.error(str(e))
    if spec.is_series and (from_ms is None or to_ms is None):
        ap.error("a rolling series needs --from and --to")
    if not 50 <= a.tick_ms <= 60_000 or (from_ms is not None and to_ms is not None and from_ms >= to_ms):
        ap.error("--tick-ms must be within [50, 60000] and --from before --to")
    ep = Endpoints(a.gamma_url.rstrip("/"), a.clob_url.rstrip("/"), a.data_url.rstrip("/"),
                   a.binance_data_url.rstrip("/"))  # fmt: skip
    f = Fetcher(Path(a.cache_dir) / "http", a.rate)
    starts: list[int] = []
    if spec.is_series and from_ms is not None and to_ms is not None:
        iv = int(spec.interval_s or 0)
        starts = list(range(from_ms // 1000 // iv * iv, to_ms // 1000, iv))
    windows, failed, missing = [], [], []
    dumps = Dumps()
    from rich.progress import Progress

    with Progress(disable=a.no_progress, transient=True, console=None) as prog:
        task = prog.add_task(f"backfill {spec.name}", total=(len(starts) or 1) + 1)
        todo: list[int | None] = list(starts) or [None]
        for st in todo:
            try:
                w = fetch_window(f, ep, spec, st) if st is not None else fetch_fixed(f, ep, spec, from_ms, to_ms)
            except FetchError as e:
                failed.append({"window_start": st, "error": str(e)})
                w = None
            else:
                if w is None:
                    missing.append(st if st is not None else spec.name)
            if w is not None:
                windows.append(w)
            prog.advance(task)
        if a.binance_data != "none" and windows:
            lo = min((w.span or (w.start_ms, w.end_ms))[0] for w in windows)
            hi = max((w.span or (w.start_ms, w.end_ms))[1] for w in windows)
            try:
                dumps = day_dumps(f, ep.binance_data, spec.binance_symbol, a.binance_kind, a.binance_data, lo, hi,
                                  Path(a.cache_dir) / "binance")  # fmt: skip
            except FetchError as e:
                failed.append({"binance": str(e)})
        prog.advance(task)
    f.close()
    rep = Report(source=f"backfill {a.from_ or '-'}..{a.to or '-'}", market=spec.name, layout="backfill")
    out: dict[str, Any] = {"windows_fetched": len(windows), "windows_missing": missing, "windows_failed": failed,
                           "network_requests": f.network_requests, "cache_hits": f.cache_hits,
                           "binance_days": len(dumps.paths), "binance_days_missing": dumps.missing,
                           "binance_days_verified": dumps.verified}  # fmt: skip
    if windows:
        tab = table_of(windows, a.tick_ms)
        bn = read_binance(dumps.paths) if dumps.paths else None
        states, rep, cols = prepare(tab, spec.name, s, a.tick_ms, rep, origin_flag=ORIGIN_BACKFILLED, binance=bn)
        if states:
            write(
                open_store(a.store_url, s.s3_endpoint_url, s.s3_region), spec.name, states, cols, rep, s, replace=True
            )
    out.update(rep.to_dict())
    out.pop("states_per_window", None)
    print(json.dumps(out, sort_keys=True) if a.json else json.dumps(out, indent=1, sort_keys=True))
    if not windows:
        print("fusion backfill: no window found", file=sys.stderr)
    return 0 if windows and not failed else 1
