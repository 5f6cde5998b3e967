"""PolymarketClient against a real local websocket + REST server: subscribe, books, garbage,
watchdog resubscribe/reconnect, and rollover to the next window of a series at expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from common.markets import parse_market
from common.schema import N_RAW, RAW_INDEX
from common.settings import Settings
from observer_svc import polymarket_client as pc
from observer_svc.polymarket_client import PolymarketClient
from tests.observer_svc._polymarket_fake import FakePolymarket, until

S = 1_767_225_600  # a multiple of 300 s
SPEC = parse_market("BTC-5M")


def val(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def settings(fake: FakePolymarket, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        feed="live",
        polymarket_ws_url=fake.ws_url,
        gamma_url=fake.base_url + "/gamma",
        clob_url=fake.base_url + "/clob",
        poly_ping_s=10.0,
        poly_watchdog_s=30.0,
        discovery_lead_s=120.0,
        reconnect_base_s=0.05,
        reconnect_max_s=0.2,
    )
    base.update(kw)
    return Settings(**base)


def scenario(body: Callable[[FakePolymarket, Clock], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = Clock((S + 100) * 1000)
        fake = await FakePolymarket(clock_ms=clock).start()
        try:
            await body(fake, clock)
        finally:
            await fake.stop()

    asyncio.run(asyncio.wait_for(main(), 9))


async def started(client: PolymarketClient) -> asyncio.Task[None]:
    return asyncio.create_task(client.run())


async def stopped(client: PolymarketClient, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(task, 3)


def test_subscribes_gets_books_pings_and_skips_garbage() -> None:
    async def body(fake: FakePolymarket, clock: Clock) -> None:
        w = fake.add_window(SPEC.series_slug(S), S * 1000, (S + 300) * 1000)
        times: list[int] = []
        client = PolymarketClient(
            settings(fake, poly_ping_s=0.1), now_ms=clock, on_event_time=lambda v, t: times.append(t)
        )
        st = client.add_market(SPEC)
        errors0 = val(pc.PARSE_ERRORS, "polymarket", "*", "json")
        frames0 = val(pc.FRAMES_IN, "polymarket", "BTC-5M")
        task = await started(client)
        await until(lambda: st.books.get(w.down) is not None and st.books[w.down].best_bid is not None, what="books")
        first = fake.messages(1)[0]
        assert first == {"assets_ids": sorted([w.up, w.down]), "type": "market", "custom_feature_enabled": True}
        assert st.window is not None and st.window.condition_id == w.cid
        assert times and times[-1] == clock.ms
        x = np.full(N_RAW, np.nan)
        st.sample_tick(clock.ms + 500)
        st.fill_raw(x, clock.ms + 500)
        assert x[RAW_INDEX["up_bid_px_0"]] == 0.48 and x[RAW_INDEX["up_ask_px_0"]] == 0.52
        assert x[RAW_INDEX["up_bid_px_1"]] == 0.01 and x[RAW_INDEX["age_poly_ms"]] == 500
        assert val(pc.FRAMES_IN, "polymarket", "BTC-5M") > frames0
        # application keep-alive: PING out, PONG back (not a parse error)
        await until(lambda: any(t == "PING" for _, t in fake.received), what="PING")
        # a garbage frame is counted and skipped; the next change still applies (both tokens in one frame)
        await fake.push("{this is not json")
        await fake.push(
            {"event_type": "price_change", "market": w.cid, "timestamp": str(clock.ms + 10), "price_changes": [
                {"asset_id": w.up, "price": "0.49", "size": "7", "side": "BUY", "hash": "a", "best_bid": "0.49",
                 "best_ask": "0.52"},
                {"asset_id": w.down, "price": "0.52", "size": "0", "side": "SELL", "hash": "b", "best_bid": "0.48",
                 "best_ask": "0.99"}]}
        )  # fmt: skip
        await until(lambda: st.books[w.up].best_bid == 0.49, what="price_change")
        assert st.books[w.down].best_ask == 0.99 and not st.books[w.up].needs_resync
        assert val(pc.PARSE_ERRORS, "polymarket", "*", "json") == errors0 + 1
        assert client.connections == 1
        await stopped(client, task)

    scenario(body)


def test_silent_feed_triggers_resubscribe_then_reconnect() -> None:
    async def body(fake: FakePolymarket, clock: Clock) -> None:
        w = fake.add_window(SPEC.series_slug(S), S * 1000, (S + 300) * 1000)
        client = PolymarketClient(settings(fake, poly_watchdog_s=0.4, poly_ping_s=0.1), now_ms=clock)
        st = client.add_market(SPEC)
        resub0 = val(pc.RESUBSCRIBES, "polymarket", "BTC-5M", "silence")
        reco0 = val(pc.RECONNECTS, "polymarket", "*", "silence")
        task = await started(client)
        await until(lambda: st.books.get(w.up) is not None and st.books[w.up].best_bid is not None, what="books")
        fake.silent = True  # ping/pong stays healthy, market data stops
        await until(lambda: any(m.get("operation") == "subscribe" for m in fake.messages(1)), what="resubscribe")
        ops = [m for m in fake.messages(1) if "operation" in m]
        assert ops[0] == {"operation": "unsubscribe", "assets_ids": sorted([w.up, w.down])}
        assert ops[1] == {"operation": "subscribe", "assets_ids": sorted([w.up, w.down])}
        assert val(pc.RESUBSCRIBES, "polymarket", "BTC-5M", "silence") == resub0 + 1
        # still silent: the watchdog reconnects, and the new connection gets its books again
        fake.silent = False
        fake_books_before = st.books[w.up].timestamp
        clock.ms += 1000
        await until(lambda: len(fake.connections) >= 2, what="reconnect")
        assert val(pc.RECONNECTS, "polymarket", "*", "silence") == reco0 + 1
        await until(lambda: st.books[w.up].timestamp != fake_books_before, what="books after reconnect")
        assert fake.messages(2)[0]["type"] == "market"
        await stopped(client, task)

    scenario(body)


def test_rollover_to_next_window_without_gap() -> None:
    async def body(fake: FakePolymarket, clock: Clock) -> None:
        w1 = fake.add_window(SPEC.series_slug(S), S * 1000, (S + 300) * 1000)
        client = PolymarketClient(settings(fake, discovery_lead_s=120.0), now_ms=clock, maintain_interval_s=0.02,
                                  discovery_retry_s=(0.02, 0.05))  # fmt: skip
        st = client.add_market(SPEC)
        roll0 = val(pc.ROLLOVERS, "polymarket", "BTC-5M")
        task = await started(client)
        await until(lambda: st.books.get(w1.up) is not None and st.books[w1.up].best_bid is not None, what="books")
        # 150 s before expiry: nothing to do yet; 110 s before: the next window is looked up (not listed yet)
        clock.ms = (S + 150) * 1000
        await asyncio.sleep(0.1)
        assert st.latest_window is not None and st.latest_window.condition_id == w1.cid
        clock.ms = (S + 190) * 1000
        await until(lambda: any(f"updown-5m-{S + 300}" in p for p in fake.http_log), what="next lookup")
        w2 = fake.add_window(SPEC.series_slug(S + 300), (S + 300) * 1000, (S + 600) * 1000)
        await until(lambda: any(m.get("operation") == "subscribe" for m in fake.messages(1)), what="subscribe next")
        sub = next(m for m in fake.messages(1) if m.get("operation") == "subscribe")
        assert sub["assets_ids"] == sorted([w2.up, w2.down])
        await until(lambda: st.books.get(w2.up) is not None and st.books[w2.up].best_bid is not None, what="w2 book")
        assert st.window is not None and st.window.condition_id == w1.cid  # still the old window
        # the boundary: the state switches exactly at the old window's end
        clock.ms = (S + 300) * 1000 - 1
        await asyncio.sleep(0.06)
        assert st.window is not None and st.window.condition_id == w1.cid
        clock.ms = (S + 300) * 1000
        await until(lambda: val(pc.ROLLOVERS, "polymarket", "BTC-5M") == roll0 + 1, what="rollover")
        assert st.window is not None and st.window.condition_id == w2.cid
        assert st.window_at((S + 300) * 1000 - 1).condition_id == w1.cid  # type: ignore[union-attr]
        assert client.connections == 1  # no reconnect needed: the open-socket subscribe was honoured
        # the old window resolves later (Up won): prev settle filled, old tokens unsubscribed
        resolved = {"event_type": "market_resolved", "market": w1.cid, "assets_ids": [w1.up, w1.down],
                    "winning_asset_id": w1.up, "winning_outcome": "Up", "timestamp": str(clock.ms + 20000)}  # fmt: skip
        await fake.push(resolved)
        clock.ms += 20_500
        await until(lambda: any(m.get("operation") == "unsubscribe" for m in fake.messages(1)), what="unsubscribe")
        unsub = next(m for m in fake.messages(1) if m.get("operation") == "unsubscribe")
        assert unsub["assets_ids"] == sorted([w1.up, w1.down])
        x = np.full(N_RAW, np.nan)
        st.fill_raw(x, clock.ms)
        assert x[RAW_INDEX["pm_prev_settle_up"]] == 1.0 and x[RAW_INDEX["pm_prev_end_s"]] == S + 300
        assert x[RAW_INDEX["pm_start_s"]] == S + 300 and x[RAW_INDEX["up_bid_px_0"]] == 0.48
        await stopped(client, task)

    scenario(body)


def test_token_without_book_is_resubscribed_then_reconnected() -> None:
    """A server that ignores subscription changes on an open socket still gets the new tokens (by reconnecting)."""

    async def body(fake: FakePolymarket, clock: Clock) -> None:
        w1 = fake.add_window("will-it-rain", 0, (S + 100_000) * 1000, outcomes=("Yes", "No"))
        client = PolymarketClient(settings(fake, poly_watchdog_s=0.3), now_ms=clock)
        st = client.add_market(parse_market("RAIN=slug:will-it-rain@BTCUSDT"))
        task = await started(client)
        await until(lambda: st.books.get(w1.up) is not None and st.books[w1.up].best_bid is not None, what="books")
        fake.ignore_operations = True  # only a connection's first subscribe message is answered
        reco0 = val(pc.RECONNECTS, "polymarket", "*", "no_book")
        # a new market appears while the socket is open
        w2 = fake.add_window("will-it-snow", 0, (S + 100_000) * 1000, outcomes=("Yes", "No"))
        st2 = client.add_market(parse_market("SNOW=slug:will-it-snow@BTCUSDT"))
        await until(lambda: any(w2.up in m.get("assets_ids", []) for m in fake.messages(1)), what="subscribe")

        async def keep_feeding() -> None:  # the first market stays lively: no whole-feed silence
            while True:
                await fake.push(fake.book(w1.up, ts=clock.ms))
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(keep_feeding())
        await until(lambda: val(pc.RESUBSCRIBES, "polymarket", "SNOW", "no_book") >= 1, what="no_book resubscribe")
        await until(lambda: len(fake.connections) >= 2, what="reconnect")
        assert val(pc.RECONNECTS, "polymarket", "*", "no_book") == reco0 + 1
        await until(lambda: st2.books[w2.up].best_bid is not None, what="snow book")
        feeder.cancel()
        await stopped(client, task)

    scenario(body)


def test_end_of_data_stops_without_reconnect() -> None:
    async def body(fake: FakePolymarket, clock: Clock) -> None:
        fake.add_window(SPEC.series_slug(S), S * 1000, (S + 300) * 1000)
        ended: list[str] = []
        client = PolymarketClient(settings(fake), now_ms=clock, on_end=ended.append)
        client.add_market(SPEC)
        task = await started(client)
        await until(lambda: client.connections == 1 and len(fake.connections) == 1, what="connect")
        await until(lambda: bool(fake.received), what="subscribe")
        await fake.connections[0].close(code=1000, reason="end of data")
        await asyncio.wait_for(task, 3)
        assert ended == ["polymarket"] and len(fake.connections) == 1

    scenario(body)
