"""Data quality of the demo's states, counted where the data is (see :mod:`fusion.demo.cli`).

Per market: states without a Polymarket market (``NO_PM_MARKET``), with stale Polymarket or Binance
data (``STALE_POLY`` / ``STALE_BINANCE``: the flags every state carries), ticks missing between
consecutive states (gaps of the ``tick_ms`` grid) and the observers' discovery failures (their
``fusion_observer_polymarket_discovery_errors`` counter, read from each observer's ``/metrics``).

:class:`StreamQuality` reads the states stream incrementally (each entry once, so it stays cheap
for a live view); :func:`from_columns` counts archived states. A fraction above
:data:`WARN_FRACTION` is a warning: the data is not what the trainer should learn from.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common import keys
from common.schema import NO_PM_MARKET, STALE_BINANCE, STALE_POLY, StateColumns, decode_states_columns_fast

WARN_FRACTION = 0.03
DISCOVERY_ERRORS = "fusion_observer_polymarket_discovery_errors"
_FLAGS = {"no_market": NO_PM_MARKET, "stale_poly": STALE_POLY, "stale_binance": STALE_BINANCE}
_WORDS = {
    "no_market": "had no Polymarket market",
    "stale_poly": "had stale Polymarket data",
    "stale_binance": "had stale Binance data",
}


@dataclass
class Quality:
    """Counts of one market's states; ``gaps`` = ticks missing between consecutive states."""

    states: int = 0
    no_market: int = 0
    stale_poly: int = 0
    stale_binance: int = 0
    gaps: int = 0
    discovery_errors: int = 0
    last_tick_ms: int | None = field(default=None, repr=False)

    def add(self, tick_ms: npt.NDArray[np.int64], flags: npt.NDArray[np.int32], step_ms: int) -> None:
        """Count a batch of consecutive states (in tick order, following the previous batch)."""
        if tick_ms.size == 0:
            return
        t = tick_ms.astype(np.int64)
        if self.last_tick_ms is not None:
            t = np.concatenate([[self.last_tick_ms], t])
        d = np.diff(t)
        self.gaps += int(np.maximum(d // step_ms - 1, 0).sum())
        self.last_tick_ms = int(t[-1])
        self.states += int(tick_ms.size)
        for name, bit in _FLAGS.items():
            setattr(self, name, getattr(self, name) + int(np.count_nonzero(flags & bit)))

    def fraction(self, name: str) -> float:
        if name == "gaps":
            return self.gaps / (self.states + self.gaps) if self.states + self.gaps else 0.0
        return float(getattr(self, name)) / self.states if self.states else 0.0

    def warnings(self, market: str) -> list[str]:
        """One sentence per count above :data:`WARN_FRACTION` (and any discovery failure)."""
        out = [
            f"{market}: {self.fraction(n):.0%} of {self.states:,} states {w}"
            for n, w in _WORDS.items()
            if self.fraction(n) > WARN_FRACTION
        ]
        if self.fraction("gaps") > WARN_FRACTION:
            out.append(f"{market}: {self.gaps:,} ticks missing from the stream ({self.fraction('gaps'):.0%})")
        if self.discovery_errors:
            out.append(f"{market}: {self.discovery_errors} Polymarket discovery failures (see logs/observer-*.log)")
        return out

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "last_tick_ms"}
        d.update({f"{n}_fraction": round(self.fraction(n), 4) for n in (*_WORDS, "gaps")})
        return d


def from_columns(cols: StateColumns, step_ms: int = 500) -> Quality:
    """Counts of archived (or any) states of one market."""
    q = Quality()
    order = np.argsort(cols.tick_ms, kind="stable")
    q.add(cols.tick_ms[order], cols.flags[order], step_ms)
    return q


class StreamQuality:
    """Per-market counts of a states stream, read incrementally (``update`` reads only new entries)."""

    def __init__(self, markets: list[str], step_ms: int = 500, batch: int = 5000) -> None:
        self.q = {m: Quality() for m in markets}
        self._last = dict.fromkeys(markets, "-")
        self.step_ms, self.batch = step_ms, batch

    def update(self, r: Any) -> None:
        for m, q in self.q.items():
            while True:
                lo = self._last[m] if self._last[m] == "-" else f"({self._last[m]}"
                entries = r.xrange(keys.states_stream(m), lo, "+", count=self.batch)
                if not entries:
                    break
                last = entries[-1][0]
                self._last[m] = last.decode() if isinstance(last, bytes) else str(last)
                cols, _ = decode_states_columns_fast([f[keys.PAYLOAD_FIELD] for _, f in entries])
                q.add(cols.tick_ms, cols.flags, self.step_ms)
                if len(entries) < self.batch:
                    break

    def set_discovery_errors(self, errors: dict[str, int]) -> None:
        for m, n in errors.items():
            if m in self.q:
                self.q[m].discovery_errors = n


def discovery_errors(metrics_urls: list[str], timeout_s: float = 1.0) -> dict[str, int] | None:
    """Discovery failures per market summed over the observers' ``/metrics`` (None: none answered)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, int] = {}
    answered = False
    for url in metrics_urls:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            text = httpx.get(url, timeout=timeout_s).text
            answered = True
            for fam in text_string_to_metric_families(text):
                if fam.name != DISCOVERY_ERRORS:
                    continue
                for s in fam.samples:
                    if s.name.endswith("_total"):
                        m = s.labels.get("market", "")
                        out[m] = out.get(m, 0) + int(s.value)
    return out if answered else None
