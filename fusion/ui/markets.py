"""The markets page's figures, read from Redis at a bounded cost per refresh.

Guarantees:

* One refresh costs two Redis round trips (``SMEMBERS`` of the market set, then one pipeline) and at most
  ``page_size`` markets' worth of commands, whatever the number of markets (the page shows one slice of them).
* A states stream is read incrementally: each refresh reads only the entries after the last one it saw (at most
  ``read_cap`` per market), so a refresh does not re-read hours of states. Coverage, gaps and the state flags
  are counted per minute over the last ``hours`` (the counting rules of :mod:`fusion.demo.quality`).
* A stream that is missing or a reply that fails is shown as missing, never raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common import keys
from common.names import is_valid_name
from common.schema import NO_PM_MARKET, STALE_BINANCE, STALE_POLY, decode_states_columns_fast
from observer_svc import presence

FLAGS = {"no_market": NO_PM_MARKET, "stale_poly": STALE_POLY, "stale_binance": STALE_BINANCE}
MINUTE_MS = 60_000


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


@dataclass
class Track:
    """What the UI has read of one market's states stream: per-minute counts over the window."""

    cursor: str | None = None
    first_ms: int | None = None  # first tick read within the window
    minutes: dict[str, dict[int, int]] = field(default_factory=lambda: {k: {} for k in ("states", *FLAGS)})

    def add(self, ticks: np.ndarray, flags: np.ndarray) -> None:
        if self.first_ms is None:
            self.first_ms = int(ticks[0])
        mins = ticks // MINUTE_MS
        for name in ("states", *FLAGS):
            sel = mins if name == "states" else mins[(flags & FLAGS[name]) != 0]
            u, c = np.unique(sel, return_counts=True)
            d = self.minutes[name]
            for m, n in zip(u.tolist(), c.tolist(), strict=True):
                d[m] = d.get(m, 0) + n

    @property
    def last_ms(self) -> int | None:
        return int(self.cursor.split("-")[0]) if self.cursor else None

    def prune(self, first_minute: int) -> None:
        if self.first_ms is not None:
            self.first_ms = max(self.first_ms, first_minute * MINUTE_MS)
        for d in self.minutes.values():
            for m in [m for m in d if m < first_minute]:
                del d[m]


class MarketsView:
    """Per-market stream length, coverage and gaps, quality flags, consumer lag, leases; observers."""

    def __init__(self, r: Any, tick_ms: int = 500, hours: float = 3.0, page_size: int = 50,
                 read_cap: int = 20_000, replicas: int = 1) -> None:  # fmt: skip
        self.r, self.tick_ms, self.hours = r, tick_ms, hours
        self.page_size, self.read_cap, self.replicas = page_size, read_cap, replicas
        self.tracks: dict[str, Track] = {}

    def market_names(self) -> list[str]:
        return sorted(n for n in map(_s, self.r.smembers(keys.MARKETS_SET)) if is_valid_name(n))

    def collect(self, page: int = 0, now_ms: int | None = None) -> dict[str, Any]:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        names = self.market_names()
        pages = max(1, -(-len(names) // self.page_size))
        page = min(max(page, 0), pages - 1)
        shown = names[page * self.page_size : (page + 1) * self.page_size]
        span_ms = int(self.hours * 3_600_000)
        pipe = self.r.pipeline(transaction=False)
        per = 6 + self.replicas + 1
        for m in shown:
            tr = self.tracks.setdefault(m, Track())
            since = max(now_ms, tr.last_ms or 0) - span_ms  # the stream's own clock when it runs ahead (replays)
            lo = str(since) if tr.last_ms is None or tr.last_ms < since else f"({tr.cursor}"
            st = keys.states_stream(m)
            pipe.xlen(st)
            pipe.xinfo_groups(st)
            pipe.xlen(keys.labels_stream(m))
            pipe.xinfo_groups(keys.labels_stream(m))
            pipe.get(keys.published_tick_key(m))
            pipe.xrange(st, lo, "+", count=self.read_cap)
            for slot in range(self.replicas + 1):
                pipe.get(keys.lease_key(m, slot))
        out = pipe.execute(raise_on_error=False)
        rows = [self._row(m, out[i * per : (i + 1) * per], now_ms, span_ms) for i, m in enumerate(shown)]
        for m in [m for m in self.tracks if m not in names]:
            del self.tracks[m]
        return {
            "now_ms": now_ms, "hours": self.hours, "tick_ms": self.tick_ms, "total": len(names),
            "page": page, "pages": pages, "markets": rows,
            "observers": presence.observers(self.r, now_ms),
        }  # fmt: skip

    def _row(self, m: str, res: list[Any], now_ms: int, span_ms: int) -> dict[str, Any]:
        xlen, groups, lxlen, lgroups, published, entries, *leases = res
        tr = self.tracks[m]
        if not isinstance(entries, Exception) and entries:
            tr.cursor = _s(entries[-1][0])
            ticks = np.array([int(_s(e[0]).split("-")[0]) for e in entries], dtype=np.int64)
            try:
                cols, _ = decode_states_columns_fast([f[keys.PAYLOAD_FIELD] for _, f in entries])
                flags = cols.flags.astype(np.int64)
                if flags.shape != ticks.shape:
                    flags = np.zeros_like(ticks)
            except Exception:  # an undecodable state counts as a state without flags (the services park it)
                flags = np.zeros_like(ticks)
            tr.add(ticks, flags)
        end = max(now_ms, tr.last_ms or 0)
        first_min = (end - span_ms) // MINUTE_MS
        tr.prune(first_min)
        per_min = MINUTE_MS // self.tick_ms
        total = sum(tr.minutes["states"].values())
        # coverage from the first tick read (a new market does not miss the hours before it) to the newest
        expected = (tr.last_ms - tr.first_ms) // self.tick_ms + 1 if tr.first_ms is not None and tr.last_ms else 0
        start_min = tr.first_ms // MINUTE_MS if tr.first_ms is not None else end // MINUTE_MS
        mins = list(range(start_min, end // MINUTE_MS + 1))
        counts = [tr.minutes["states"].get(x, 0) for x in mins]
        flagged = {k: sum(tr.minutes[k].values()) for k in FLAGS}
        return {
            "market": m,
            "length": None if isinstance(xlen, Exception) else int(xlen),
            "labels_length": None if isinstance(lxlen, Exception) else int(lxlen),
            "last_tick_ms": tr.last_ms,
            "published_ms": int(published) if published and not isinstance(published, Exception) else None,
            "window_states": total,
            "coverage": round(min(1.0, total / expected), 4) if expected else None,
            "gaps": max(0, expected - total),
            "quality": {k: round(v / total, 4) if total else 0.0 for k, v in flagged.items()},
            "flag_counts": flagged,
            "lag": {**_lags(groups, "states"), **_lags(lgroups, "labels")},
            "leases": [_s(v) for v in leases if v is not None and not isinstance(v, Exception)],
            "minutes": [x * MINUTE_MS for x in mins],
            "minute_coverage": [round(min(1.0, c / per_min), 3) for c in counts],
        }


def _lags(groups: Any, kind: str) -> dict[str, int | None]:
    if isinstance(groups, Exception) or not groups:
        return {}
    out: dict[str, int | None] = {}
    for g in groups:
        name = _s(g.get("name", b""))
        lag = g.get("lag")
        out[f"{name}:{kind}"] = None if lag is None else int(lag)
        out[f"{name}:{kind}:pending"] = int(g.get("pending", 0))
    return out
