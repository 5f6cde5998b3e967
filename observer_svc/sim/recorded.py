"""Recorded driver: replays real captures in event-time order.

Binance: hftbacktest raw spot frames (gzip lines ``<recv_ns> <json>``); the files of a symbol are
concatenated, symbols merged by receive time, and every frame is sent byte for byte as recorded.
The line holding the REST ``/api/v3/depth`` snapshot is served on the depth endpoint (verbatim
until the replay has moved past it; after that, the book rebuilt from the snapshot and the
replayed updates, with ``lastUpdateId`` = the last replayed ``u``).

Polymarket: Borisz42 1 Hz top-of-book CSVs; each row becomes a ``book`` event for the Up and the
Down token of its window (one level per side: best price, size = the recorded top-5 liquidity);
``market_resolved`` is sent at a window's end when the winner is clear from the last mid (>= 0.9
or <= 0.1; derived, not official). With both inputs and ``align`` the Polymarket recording is
shifted by a whole number of windows so its first window contains the first Binance event.

Sim time = recorded event time (Binance ``E`` carried forward over frames without one, kept
monotonic; Polymarket row time).
"""

from __future__ import annotations

import csv
import gzip
import heapq
import re
from calendar import timegm
from collections.abc import Iterator
from pathlib import Path
from time import strptime

import orjson

from observer_svc.sim import wire_out as wo
from observer_svc.sim.core import BOut, Driver, End, Out, PolyWindow, POut

_E_RE = re.compile(rb'"E":(\d+)')
_STREAM_RE = re.compile(rb'^\{"stream":"([^"]+)"')


def _ts(s: str) -> int:
    return timegm(strptime(s, "%Y-%m-%d %H:%M:%S")) * 1000


def load_binance(path: str | Path, symbols: list[str] | None = None) -> tuple[dict[str, list[tuple[int, bytes]]], dict]:
    """Lines per symbol (files concatenated in name order) and the REST snapshot line per symbol."""
    p = Path(path)
    files = sorted(p.glob("*.gz")) if p.is_dir() else [p]
    out: dict[str, list[tuple[int, bytes]]] = {}
    snaps: dict[str, bytes] = {}
    for f in files:
        sym = f.name.split("_", 1)[0].upper()
        if symbols and sym not in {s.upper() for s in symbols}:
            continue
        lines = out.setdefault(sym, [])
        with gzip.open(f, "rb") as fh:
            for line in fh:
                ns, _, raw = line.rstrip(b"\r\n").partition(b" ")
                if not raw:
                    continue
                if raw.startswith(b'{"stream"'):
                    lines.append((int(ns), raw))
                elif b'"lastUpdateId"' in raw and sym not in snaps:
                    snaps[sym] = raw
    return out, snaps


class _Klines:
    """1m klines built from replayed spot trades (Binance array rows)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, p: str, q: str, T: int, tid: int, buyer_maker: bool) -> None:
        t0 = T // 60_000 * 60_000
        if not self.rows or self.rows[-1]["t"] != t0:
            self.rows.append({"t": t0, "T": t0 + 59_999, "o": p, "h": p, "l": p, "c": p, "v": 0.0, "n": 0,
                              "f": tid, "L": tid, "q": 0.0, "V": 0.0, "Q": 0.0})  # fmt: skip
        k, px, qty = self.rows[-1], float(p), float(q)
        k["h"] = p if px > float(k["h"]) else k["h"]
        k["l"] = p if px < float(k["l"]) else k["l"]
        k["c"], k["L"], k["n"] = p, tid, k["n"] + 1
        k["v"] += qty
        k["q"] += qty * px
        if not buyer_maker:
            k["V"] += qty
            k["Q"] += qty * px

    def wire(self, limit: int, start: int | None, end: int | None) -> list[list]:
        rows = [r for r in self.rows if (start is None or r["t"] >= start) and (end is None or r["t"] <= end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        f8 = wo.fmt_fixed
        return [[r["t"], r["o"], r["h"], r["l"], r["c"], f8(r["v"], 8), r["T"], f8(r["q"], 8), r["n"],
                 f8(r["V"], 8), f8(r["Q"], 8), "0"] for r in rows]  # fmt: skip


class RecordedDriver(Driver):
    name = "recorded"
    binance_kind = "spot"
    exact_streams = True
    hold_unsubscribed_s = 30.0

    def __init__(
        self,
        binance: str | Path | None = None,
        polymarket: str | Path | list[str | Path] | None = None,
        speed: float = 0.0,
        symbols: list[str] | None = None,
        align: bool = True,
        wait_for_clients: bool = True,
        max_gap_s: float = 3600.0,
        market: str = "BTC-15M",
        poly_symbol: str = "BTCUSDT",
    ) -> None:
        self.speed, self.wait_for_clients, self.max_gap_ms = float(speed), wait_for_clients, int(max_gap_s * 1000)
        self.market, self.poly_symbol = market, poly_symbol
        self.blines: dict[str, list[tuple[int, bytes]]] = {}
        self.snap_raw: dict[str, bytes] = {}
        if binance is not None:
            self.blines, self.snap_raw = load_binance(binance, symbols)
        self._bseq = self._binance_timeline()
        self.streams = sorted({o.stream for _, o in self._bseq})
        pfiles = [] if polymarket is None else [polymarket] if isinstance(polymarket, str | Path) else polymarket
        self.rows: list[tuple[int, PolyWindow, list[str]]] = []
        self.wins: dict[str, PolyWindow] = {}
        self.shift_ms = 0
        self._load_poly([Path(f) for f in pfiles], align)
        firsts = [x[0] for x in (self._bseq[:1] + [(r[0],) for r in self.rows[:1]])]
        self.now_ms = min(firsts) if firsts else 0
        self.first_ms = self.now_ms
        self.books: dict[str, dict] = {}  # asset -> last book event
        self.by_token: dict[str, PolyWindow] = {}
        for w in self.wins.values():
            self.by_token[w.up] = self.by_token[w.down] = w
        self.dbook: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.snap_id: dict[str, int] = {}
        self.applied_u: dict[str, int] = {}
        for sym, raw in self.snap_raw.items():
            d = orjson.loads(raw)
            self.dbook[sym] = ({p: q for p, q in d["bids"]}, {p: q for p, q in d["asks"]})
            self.snap_id[sym] = self.applied_u[sym] = int(d["lastUpdateId"])
        self.kl: dict[str, _Klines] = {s: _Klines() for s in self.blines}
        self.last_px: dict[str, str] = {}
        self.sent = 0

    # ------------------------------------------------------------------ loading
    def _binance_timeline(self) -> list[tuple[int, BOut]]:
        merged = heapq.merge(*self.blines.values(), key=lambda x: x[0])
        seq: list[tuple[int, BOut]] = []
        t = 0
        for _, raw in merged:
            m = _E_RE.search(raw)
            if m:
                t = max(t, int(m.group(1)))
            sm = _STREAM_RE.match(raw)
            if sm is None:
                continue
            seq.append((t, BOut(sm.group(1).decode(), raw=raw)))
        first = next((x[0] for x in seq if x[0]), 0)
        return [(tt or first, o) for tt, o in seq]

    def _load_poly(self, files: list[Path], align: bool) -> None:
        rows: list[tuple[int, int, int, list[str]]] = []
        for f in files:
            with open(f, newline="") as fh:
                rd = csv.reader(fh)
                next(rd, None)
                for r in rd:
                    if len(r) >= 15:
                        rows.append((_ts(r[0]), _ts(r[1]), _ts(r[2]), r))
        rows.sort(key=lambda x: x[0])
        if not rows:
            return
        iv = rows[0][2] - rows[0][1]
        if align and self._bseq:
            b0 = self._bseq[0][0] // iv * iv
            self.shift_ms = b0 - rows[0][1]
        label = {300_000: "5m", 900_000: "15m", 3_600_000: "1h"}.get(iv, f"{iv // 60_000}m")
        asset = self.market.split("-", 1)[0].lower()
        sh = self.shift_ms
        for t, start, end, r in rows:
            slug = f"{asset}-updown-{label}-{(start + sh) // 1000}"
            w = self.wins.get(slug)
            if w is None:
                w = self.wins[slug] = PolyWindow(self.market, self.poly_symbol, slug, start + sh, end + sh)
                w.extra["last_t"] = 0
            w.extra["last_t"] = t + sh
            if float(r[5] or 0) > 0:
                w.extra["last_mid"] = float(r[5])
            self.rows.append((t + sh, w, r))

    def _poly_timeline(self) -> Iterator[tuple[int, object]]:
        done = [w for w in self.wins.values() if w.end_ms - w.extra["last_t"] <= 60_000 and "last_mid" in w.extra]
        ends = sorted(((w.end_ms, w) for w in done), key=lambda x: x[0])
        ei = 0
        for t, w, r in self.rows:
            while ei < len(ends) and ends[ei][0] <= t:
                yield ends[ei][0], ends[ei][1]
                ei += 1
            yield t, (w, r)
        for e in ends[ei:]:
            yield e[0], e[1]

    # ------------------------------------------------------------------ steps
    def venues(self) -> set[str]:
        return ({"binance"} if self._bseq else set()) | ({"polymarket"} if self.rows else set())

    def steps(self) -> Iterator[tuple[int, list[Out]]]:
        bi = ((t, o) for t, o in self._bseq)
        pi = self._poly_timeline()
        n_b, n_p = len(self._bseq), len(self.rows)
        done_b = done_p = 0
        for t, item in heapq.merge(bi, pi, key=lambda x: x[0]):
            self.now_ms = max(self.now_ms, t)
            if isinstance(item, BOut):
                self._on_binance(item)
                done_b += 1
                outs: list[Out] = [item]
                if done_b == n_b:
                    outs.append(End("binance"))
                yield t, outs
            elif isinstance(item, PolyWindow):
                w = item
                w.resolved = True
                if w.extra["last_mid"] >= 0.9 or w.extra["last_mid"] <= 0.1:
                    w.winner_up = w.extra["last_mid"] >= 0.9
                    yield t, [POut((w.up, w.down), [wo.market_resolved(w, t, w.winner_up)], custom=True)]
            else:
                w, r = item  # type: ignore[misc]
                done_p += 1
                outs = [POut((w.up,), [self._row_book(w, w.up, t, r, 3)]),
                        POut((w.down,), [self._row_book(w, w.down, t, r, 9)])]  # fmt: skip
                if done_p == n_p:
                    outs.append(End("polymarket"))
                yield t, outs

    def _row_book(self, w: PolyWindow, asset: str, t: int, r: list[str], i: int) -> dict:
        bid, ask, mid, bl, al = float(r[i] or 0), float(r[i + 1] or 0), float(r[i + 2] or 0), r[i + 4], r[i + 5]
        bids = [{"price": wo.fmt_poly(bid, 3), "size": wo.fmt_poly(float(bl or 0), 2)}] if bid > 0 else []
        asks = [{"price": wo.fmt_poly(ask, 3), "size": wo.fmt_poly(float(al or 0), 2)}] if ask > 0 else []
        ext = any(0 < x < 0.04 or x > 0.96 for x in (bid, ask))
        ev = wo.poly_book(w.cid, asset, t, bids, asks, "0.001" if ext else "0.01", wo.fmt_poly(mid, 3) if mid else "0")
        self.books[asset] = ev
        return ev

    def _on_binance(self, o: BOut) -> None:
        raw = o.raw or b""
        sym = o.stream.split("@", 1)[0].upper()
        if "@depth" in o.stream and sym in self.dbook:
            d = orjson.loads(raw)["data"]
            if int(d["u"]) > self.applied_u[sym]:
                for side, key in ((0, "b"), (1, "a")):
                    book = self.dbook[sym][side]
                    for p, q in d[key]:
                        if float(q) == 0.0:
                            book.pop(p, None)
                        else:
                            book[p] = q
                self.applied_u[sym] = int(d["u"])
        elif o.stream.endswith("@trade"):
            d = orjson.loads(raw)["data"]
            self.kl[sym].add(d["p"], d["q"], int(d["T"]), int(d["t"]), bool(d["m"]))
            self.last_px[sym] = d["p"]

    # ------------------------------------------------------------------ REST / state
    def depth(self, symbol: str, limit: int, futures: bool) -> bytes | dict | None:
        sym = symbol.upper()
        if sym not in self.dbook:
            return None
        if self.applied_u[sym] == self.snap_id[sym]:
            return self.snap_raw[sym]
        bids, asks = self.dbook[sym]
        bl = sorted(bids.items(), key=lambda x: -float(x[0]))[:limit]
        al = sorted(asks.items(), key=lambda x: float(x[0]))[:limit]
        return wo.depth_snapshot(self.applied_u[sym], [list(x) for x in bl], [list(x) for x in al],
                                 self.now_ms if futures else None)  # fmt: skip

    def klines(self, symbol: str, limit: int, start: int | None, end: int | None) -> list | None:
        k = self.kl.get(symbol.upper())
        return k.wire(limit, start, end) if k else None

    def last_price(self, symbol: str) -> str | None:
        return self.last_px.get(symbol.upper())

    def windows(self) -> list[PolyWindow]:
        return list(self.wins.values())

    def window_by_slug(self, slug: str) -> PolyWindow | None:
        return self.wins.get(slug)

    def window_by_token(self, token: str) -> PolyWindow | None:
        return self.by_token.get(token)

    def up_price(self, w: PolyWindow) -> float:
        ev = self.books.get(w.up)
        if not ev or not ev["bids"] or not ev["asks"]:
            return 0.5
        return (float(ev["bids"][0]["price"]) + float(ev["asks"][0]["price"])) / 2.0

    def book_event(self, asset: str) -> dict | None:
        w = self.by_token.get(asset)
        if w is None or w.resolved:
            return None
        return self.books.get(asset)

    def status(self) -> dict:
        return {
            "first_ms": self.first_ms,
            "binance_frames": len(self._bseq),
            "binance_streams": self.streams,
            "polymarket_rows": len(self.rows),
            "polymarket_windows": len(self.wins),
            "polymarket_shift_ms": self.shift_ms,
        }
