"""Per-market alerts of the observer: data gaps (from the flags of the states it builds) and discovery failures
(from its Polymarket lookups), each once per episode (:mod:`common.episodes`, key = market).

* ``data-gap``: a market's states lack fresh venue data (flags ``stale_poly``, ``stale_binance`` or
  ``no_pm_market``) for ``alert_gap_s`` of tick time; ``data-gap-recovered`` with the gap's length (``gap_s``, tick
  time) at its first good tick. The first good tick of a market in this process also closes an episode left open
  by another replica or an earlier life of this observer (a lease handed over, a restart).
* ``discovery-failed``: a lookup of the market's window kept failing (Gamma/CLOB errors after the retries), or the
  window the tick loop needs now (a series' current window, a fixed market's one) was not found;
  ``discovery-failed-recovered`` at the market's next successful lookup.

Guarantees: the tick loop only updates a few dicts; Redis and the webhook are reached on a background thread and
only on a transition, and not at all while alerts are off.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.episodes import Episodes
from common.schema import NO_PM_MARKET, STALE_BINANCE, STALE_POLY, flag_names

GAP_FLAGS = STALE_POLY | STALE_BINANCE | NO_PM_MARKET
DATA_GAP, DISCOVERY = "data-gap", "discovery-failed"


class GapMonitor:
    """Data-gap episodes of the markets one observer builds; feed it every tick's ``(market, flags)``."""

    def __init__(self, gap_ms: int, ep: Episodes) -> None:
        self.gap_ms, self.ep = gap_ms, ep
        self.bad_since: dict[str, int] = {}  # market -> first tick of the current run of bad ticks
        self.missing: dict[str, int] = {}  # market -> flags seen during the run
        self.alerted: set[str] = set()
        self.seen_good: set[str] = set()

    def on_tick(self, tick_ms: int, flags: Iterable[tuple[str, int]]) -> None:
        for m, f in flags:
            bad = f & GAP_FLAGS
            if bad:
                since = self.bad_since.setdefault(m, tick_ms)
                self.missing[m] = self.missing.get(m, 0) | bad
                if m not in self.alerted and tick_ms - since >= self.gap_ms:
                    self.alerted.add(m)
                    what = flag_names(self.missing[m])
                    self.ep.open_later(DATA_GAP, m, f"{m}: states without fresh data ({', '.join(what)}) for "
                                       f"{(tick_ms - since) / 1000:.0f} s", since_ms=since, market=m, missing=what,
                                       gap_s=(tick_ms - since) / 1000)  # fmt: skip
                continue
            since_or_none = self.bad_since.pop(m, None)
            self.missing.pop(m, None)
            if m in self.alerted or m not in self.seen_good:
                self.alerted.discard(m)
                self.seen_good.add(m)
                self.ep.close_later(DATA_GAP, m, f"{m}: fresh data again", at_ms=tick_ms, market=m,
                                    ticks_from_ms=since_or_none)  # fmt: skip


class DiscoveryMonitor:
    """Discovery-failure episodes of one observer's markets (called by the discovery schedule)."""

    def __init__(self, ep: Episodes) -> None:
        self.ep = ep
        self.failing: set[str] = set()
        self.checked: set[str] = set()

    def failed(self, market: str, reason: str, **fields: object) -> None:
        if market in self.failing:
            return
        self.failing.add(market)
        self.ep.open_later(DISCOVERY, market, f"{market}: Polymarket discovery failing: {reason}", market=market,
                           reason=reason[:300], **fields)  # fmt: skip

    def found(self, market: str, slug: str) -> None:
        if market in self.failing or market not in self.checked:
            self.failing.discard(market)
            self.checked.add(market)
            self.ep.close_later(DISCOVERY, market, f"{market}: discovered {slug}", market=market, slug=slug)
