"""Discovery keeps up with a fast event clock (a simulator at 60x, a replay) when every REST call
is slow: the windows of the next ``discovery_lead_s`` are looked up concurrently, ahead of time."""

from __future__ import annotations

import asyncio
import time

from common.markets import parse_market
from observer_svc.polymarket_client import PolymarketClient
from tests.observer_svc._polymarket_fake import FakePolymarket
from tests.observer_svc.test_polymarket_client import Clock, settings

S = 1_767_225_600  # a multiple of 300 s
SPEC = parse_market("BTC-5M")
RATE = 600.0  # event seconds per wall second: a 5-minute window lasts 0.5 s of wall time
DELAY_S = 0.3  # every Gamma/CLOB call answers 0.3 s late: one window's two calls take longer than the window


def test_discovery_keeps_up_with_fast_event_time_and_slow_venue() -> None:
    async def main() -> float:
        clock = Clock(S * 1000 + 1000)
        fake = await FakePolymarket(clock_ms=clock, http_delay_s=DELAY_S).start()
        for k in range(40):
            fake.add_window(SPEC.series_slug(S + 300 * k), (S + 300 * k) * 1000, (S + 300 * (k + 1)) * 1000)
        client = PolymarketClient(settings(fake, discovery_lead_s=1500.0), now_ms=clock, maintain_interval_s=0.02,
                                  discovery_retry_s=(0.05, 0.2))  # fmt: skip
        st = client.add_market(SPEC)
        task = asyncio.create_task(client.run())
        t0 = time.monotonic()
        missing = samples = 0
        try:
            while (el := time.monotonic() - t0) < 4.5:
                clock.ms = S * 1000 + 1000 + int(el * RATE * 1000)
                if el > 1.5:  # after the first lookups (the very first window is necessarily late)
                    samples += 1
                    missing += st.window_at(clock.ms) is None
                await asyncio.sleep(0.01)
        finally:
            await client.close()
            await asyncio.wait_for(task, 3)
            await fake.stop()
        return missing / samples

    frac_missing = asyncio.run(asyncio.wait_for(main(), 20))
    assert frac_missing < 0.05, f"{frac_missing:.0%} of the ticks had no Polymarket window"


def test_series_starts_cover_the_lead() -> None:
    from observer_svc.discovery import series_starts

    now = (S + 100) * 1000
    assert series_starts(SPEC, now, 0) == ([S, S + 300], (S + 300) * 1000)  # current and next, always
    starts, due = series_starts(SPEC, now, 900_000)
    assert starts == [S, S + 300, S + 600, S + 900]  # every window starting before now + 15 min
    assert due == (S + 300) * 1000  # the list changes when the current window ends
