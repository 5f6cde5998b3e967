"""archiver_svc.store_backoff.StoreBackoff: exponential backoff with jitter, the gauge, one line per state change."""

from __future__ import annotations

import logging
import time

import pytest

from archiver_svc.store_backoff import STORE_DOWN, StoreBackoff


def test_backoff_grows_caps_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    b = StoreBackoff(base_s=1.0, max_s=4.0, log_every_s=3600.0)
    assert not b.waiting()
    caplog.set_level(logging.INFO, logger="archiver")
    delays = []
    for _ in range(5):
        t0 = time.monotonic()
        b.failed("states/x", OSError("down"))
        delays.append(b.retry_at - t0)
        assert b.waiting()
    caps = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 - 0.01 <= d <= c + 0.01 for d, c in zip(delays, caps, strict=True)), delays
    assert STORE_DOWN._value.get() == 1
    assert sum("store unavailable" in r.getMessage() for r in caplog.records) == 1  # one line for the outage
    b.recovered()
    assert not b.waiting() and b.failures == 0 and b.down_since is None
    assert STORE_DOWN._value.get() == 0
    assert sum("store recovered" in r.getMessage() for r in caplog.records) == 1
    b.recovered()  # not down: nothing to say
    assert sum("store recovered" in r.getMessage() for r in caplog.records) == 1
