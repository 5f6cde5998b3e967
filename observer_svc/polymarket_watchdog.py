"""The Polymarket feed's health: what the client's watchdog decides, kept apart from the socket it acts on.

:class:`FeedHealth` remembers when market data last arrived, which subscribed tokens still wait for their
first ``book`` and when each repaired book was last resynced. :meth:`FeedHealth.check` is a pure decision
(no IO) taken every watchdog tick, in this order:

1. the whole feed silent for ``period`` -> resubscribe every token (``"silence"``); still silent one more
   period -> reconnect (``"silence"``);
2. a token without its initial book ``period`` after its subscribe -> resubscribe it (``"no_book"``); still
   none after the retry -> reconnect (``"no_book"``; covers a server that ignores subscription changes on an
   open connection);
3. a book repaired after a crossed or disagreeing ``price_change`` -> resubscribe it for a fresh snapshot
   (``"book_resync"``), at most once per period.

The client sends the resubscriptions in the order given and closes the socket when a reconnect reason is
returned (:class:`observer_svc.polymarket_client.PolymarketClient`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable


class FeedHealth:
    """See the module docstring. Times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self.awaiting_book: dict[str, tuple[float, int]] = {}  # token -> (since, tries)
        self.resync_at: dict[str, float] = {}
        self.last_data = time.monotonic()
        self.silence_resub_at: float | None = None

    def connected(self, tokens: Iterable[str], now: float) -> None:
        """A new socket subscribed ``tokens``: every one waits for its book; the silence clock restarts."""
        self.awaiting_book = {t: (now, 0) for t in tokens}
        self.last_data = now
        self.silence_resub_at = None

    def subscribed(self, tokens: Iterable[str], now: float) -> None:
        for t in tokens:
            self.awaiting_book[t] = (now, 0)

    def unsubscribed(self, tokens: Iterable[str]) -> None:
        for t in tokens:
            self.awaiting_book.pop(t, None)
            self.resync_at.pop(t, None)

    def data(self, now: float) -> None:
        """A frame carried market data."""
        self.last_data = now
        self.silence_resub_at = None

    def got_book(self, token: str) -> None:
        self.awaiting_book.pop(token, None)

    def check(
        self, now: float, period: float, subscribed: set[str], needing_resync: Iterable[str]
    ) -> tuple[list[tuple[list[str], str]], str | None]:
        """``(resubscriptions as (tokens, reason), reconnect reason or None)`` at ``now``."""
        resubs: list[tuple[list[str], str]] = []
        reason: str | None = None
        if subscribed and now - self.last_data >= period:
            if self.silence_resub_at is None:
                self.silence_resub_at = now
                resubs.append((sorted(subscribed), "silence"))
            elif now - self.silence_resub_at >= period:
                reason = "silence"
        late = [t for t, (since, _) in self.awaiting_book.items() if now - since >= period]
        if late and reason is None:
            if any(self.awaiting_book[t][1] >= 1 for t in late):
                reason = "no_book"
            else:
                for t in late:
                    self.awaiting_book[t] = (now, 1)
                resubs.append((late, "no_book"))
        if reason is None:
            stale = [t for t in needing_resync if t in subscribed and now - self.resync_at.get(t, -1e18) >= period]
            if stale:
                for t in stale:
                    self.resync_at[t] = now
                resubs.append((stale, "book_resync"))
        return resubs, reason
