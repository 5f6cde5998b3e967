"""Daily performance summaries beside a trader's archived records: ``trades/{trader}/{YYYY-MM-DD}/summary.json``.

Guarantees:

* :func:`write_summary` recomputes the day from the archive (:func:`archiver_svc.trades.load_trades` +
  :func:`archiver_svc.performance.summarize`) and writes it only when the bytes differ: idempotent, and a later
  run after more records (a ``--final`` flush, a late window) replaces it with the complete day.
* :class:`DaySummaries` (used by the archiver) writes a day's summary once the archiver's group has delivered the
  trader's stream past the day's end + one window + grace (every window of the day is archived), and on
  ``flush(force=True)`` (``--final``). The day before the first day a process archives is checked too, so a
  restart between a day's last window and its close does not leave that day without a summary. A failed write
  is logged once and retried on the next flush; it never stops the archiver.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Callable

from archiver_svc.performance import summarize
from archiver_svc.trades import load_trades
from archiver_svc.windows import PREFIXES, utc_date
from common.log import kv, log_once
from common.names import check_name
from common.store import ObjectStore

log = logging.getLogger("archiver")
DAY_MS = 86_400_000


def summary_key(trader: str, day: str) -> str:
    return f"{PREFIXES['trades']}/{check_name(trader, 'trader')}/{day}/summary.json"


def day_start_ms(day: str) -> int:
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1000


def write_summary(store: ObjectStore, trader: str, day: str) -> bool:
    """(Re)compute ``trader``'s summary of UTC ``day`` from the archive; True when the stored bytes changed."""
    start = day_start_ms(day)
    got = load_trades(store, trader, start, start + DAY_MS)
    body = summarize(trader, day, got.ids, got.records)
    if got.problems:
        body["problems"] = got.problems[:20]
    data = json.dumps(body, sort_keys=True, indent=1).encode()
    key = summary_key(trader, day)
    try:
        if store.get(key) == data:
            return False
    except KeyError:
        if not got.ids:
            return False  # nothing archived that day: no summary
    store.put(key, data)
    return True


class DaySummaries:
    """Which (trader, day) summaries are due, and writing them (see the module docstring)."""

    def __init__(self, store: ObjectStore, window_ms: int, grace_ms: int) -> None:
        self.store, self.window_ms, self.grace_ms = store, window_ms, grace_ms
        self.touched: set[tuple[str, str]] = set()
        self._seen: set[str] = set()

    def touch(self, trader: str, window_start_ms: int) -> None:
        """A window of ``trader`` starting at ``window_start_ms`` was archived."""
        self.touched.add((trader, utc_date(window_start_ms)))
        if trader not in self._seen:
            self._seen.add(trader)
            self.touched.add((trader, utc_date(window_start_ms - DAY_MS)))

    def flush(self, delivered_ms: Callable[[str], int], force: bool = False) -> int:
        """Write the summaries of closed days (every touched day with ``force``); returns how many changed."""
        n = 0
        for trader, day in sorted(self.touched):
            if not force and delivered_ms(trader) < day_start_ms(day) + DAY_MS + self.window_ms + self.grace_ms:
                continue
            try:
                if write_summary(self.store, trader, day):
                    n += 1
                    kv(log, logging.INFO, "daily trade summary written", trader=trader, day=day)
            except Exception as e:  # the store is down: retried on the next flush
                log_once(log, f"summary:{trader}:{day}", "daily summary not written; retrying", trader=trader,
                         day=day, error=f"{type(e).__name__}: {e}"[:300])  # fmt: skip
                continue
            self.touched.discard((trader, day))
        return n
