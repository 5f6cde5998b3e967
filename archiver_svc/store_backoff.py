"""The archiver's store outage policy: back off when object writes fail, say so once, say when it is over.

:class:`StoreBackoff` is told each failed round of writes (:meth:`~StoreBackoff.failed`) and each round that
stored something (:meth:`~StoreBackoff.recovered`). While the store is down no new write is submitted before
:attr:`~StoreBackoff.retry_at` (exponential backoff with jitter, ``base_s * 2**failures`` capped at ``max_s``);
the entries stay pending. One log line when the store goes down, one every ``log_every_s`` while it stays down,
one when it recovers; the gauge ``fusion_archiver_store_down`` is 1 meanwhile.
"""

from __future__ import annotations

import logging
import random
import time

from common.log import kv
from common.metrics import gauge

log = logging.getLogger("archiver")

STORE_DOWN = gauge("fusion_archiver_store_down", "1 while object writes fail (backing off)")


class StoreBackoff:
    """See the module docstring. Times are ``time.monotonic()`` seconds."""

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0, log_every_s: float = 300.0) -> None:
        self.base_s, self.max_s, self.log_every_s = base_s, max_s, log_every_s
        self.down_since: float | None = None  # the first failed write of the current outage
        self.failures = 0  # failed write rounds of the current outage
        self.retry_at = 0.0  # no write is submitted before this
        self._logged_at = 0.0

    def waiting(self) -> bool:
        """True while writes must wait out the backoff."""
        return time.monotonic() < self.retry_at

    def failed(self, key: str, e: Exception) -> None:
        """One failed round of writes (``key``: the first object that failed)."""
        now = time.monotonic()
        self.failures += 1
        cap = min(self.max_s, self.base_s * 2 ** min(self.failures - 1, 30))
        delay = random.uniform(cap / 2, cap)
        self.retry_at = now + delay
        error = f"{type(e).__name__}: {e}"[:300]
        if self.down_since is None:
            self.down_since = self._logged_at = now
            STORE_DOWN.set(1)
            kv(log, logging.ERROR, "store unavailable; backing off, entries stay pending", key=key, error=error)
        elif now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            kv(log, logging.WARNING, "store still unavailable", down_s=round(now - self.down_since),
               failures=self.failures, retry_in_s=round(delay, 1), error=error)  # fmt: skip

    def recovered(self) -> None:
        """A round stored something: if the store was down, it is back."""
        if self.down_since is None:
            return
        down = time.monotonic() - self.down_since
        kv(log, logging.INFO, "store recovered", down_s=round(down, 1), failures=self.failures)
        STORE_DOWN.set(0)
        self.down_since = None
        self.failures = 0
        self.retry_at = 0.0
