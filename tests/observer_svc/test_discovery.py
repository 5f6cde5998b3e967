"""Market discovery against a real local HTTP endpoint (Gamma + CLOB shapes)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from common.markets import parse_market
from observer_svc.discovery import Discovery, DiscoveryError, parse_iso_ms, tokens_from_gamma
from tests.observer_svc._polymarket_fake import FakePolymarket

S = 1_767_225_600  # a multiple of 900 s


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(asyncio.wait_for(coro, 8))


async def _with_fake(body):  # noqa: ANN001, ANN202
    fake = await FakePolymarket().start()
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            disc = Discovery(
                http, fake.base_url + "/gamma", fake.base_url + "/clob", backoff_s=0.01, backoff_max_s=0.05
            )
            return await body(fake, disc)
    finally:
        await fake.stop()


def test_pure_helpers() -> None:
    assert parse_iso_ms("2026-01-01T00:00:00Z") == 1_767_225_600_000
    assert parse_iso_ms("2026-01-01T00:00:00.500000Z") == 1_767_225_600_500
    assert parse_iso_ms("2026-01-01") == 1_767_225_600_000
    assert parse_iso_ms("not a date") is None and parse_iso_ms(None) is None
    m = {"clobTokenIds": '["11", "22"]', "outcomes": '["No", "Yes"]'}
    assert tokens_from_gamma(m) == ("22", "11")  # Up = the Yes outcome, whatever its position
    assert tokens_from_gamma({"clobTokenIds": '["11"]'}) is None


def test_series_current_and_next_window() -> None:
    spec = parse_market("BTC-15M")

    async def body(fake: FakePolymarket, disc: Discovery) -> None:
        w0 = fake.add_window(spec.series_slug(S), S * 1000, (S + 900) * 1000)
        w1 = fake.add_window(spec.series_slug(S + 900), (S + 900) * 1000, (S + 1800) * 1000)
        cur = await disc.current_window(spec, (S + 400) * 1000)
        assert cur is not None
        assert (cur.slug, cur.condition_id, cur.up_token, cur.down_token) == (w0.slug, w0.cid, w0.up, w0.down)
        assert (cur.start_ms, cur.end_ms) == (S * 1000, (S + 900) * 1000)  # eventStartTime, not startDate
        assert f"/gamma/events?slug=btc-updown-15m-{S}" in fake.http_log
        assert f"/clob/markets/{w0.cid}" in fake.http_log
        nxt = await disc.next_window(spec, cur)
        assert nxt is not None and nxt.condition_id == w1.cid and nxt.start_ms == cur.end_ms
        assert await disc.next_window(spec, nxt) is None  # not listed yet
        w0.closed = True  # a closed window is skipped: current falls to the next one
        cur2 = await disc.current_window(spec, (S + 400) * 1000)
        assert cur2 is not None and cur2.condition_id == w1.cid

    run(_with_fake(body))


def test_fixed_by_slug_and_condition_id() -> None:
    async def body(fake: FakePolymarket, disc: Discovery) -> None:
        w = fake.add_window("will-it-rain", 1_700_000_000_000, 1_800_000_000_000, outcomes=("Yes", "No"))
        by_slug = await disc.fixed_window(parse_market("RAIN=slug:will-it-rain@BTCUSDT"))
        assert by_slug is not None
        assert (by_slug.slug, by_slug.condition_id, by_slug.up_token, by_slug.down_token) == (
            "will-it-rain", w.cid, w.up, w.down)  # fmt: skip
        assert by_slug.start_ms == 1_700_000_000_000 and by_slug.end_ms == 1_800_000_000_000
        by_cid = await disc.current_window(parse_market(f"RAIN=cid:{w.cid}@BTCUSDT"), 0)
        assert by_cid is not None and by_cid.up_token == w.up and by_cid.slug == "will-it-rain"
        assert by_cid.end_ms == 1_800_000_000_000 and by_cid.start_ms == 0  # CLOB has no start
        assert await disc.fixed_window(parse_market("X=slug:nope@BTCUSDT")) is None
        assert await disc.fixed_window(parse_market("X=cid:0xdead@BTCUSDT")) is None  # 404

    run(_with_fake(body))


def test_retries_transient_errors_without_blocking_the_loop() -> None:
    spec = parse_market("ETH-5M")

    async def body(fake: FakePolymarket, disc: Discovery) -> None:
        fake.add_window(spec.series_slug(S), S * 1000, (S + 300) * 1000)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        fake.fail_next = 2  # two 500s, then the answer
        w = await disc.series_window(spec, S)
        assert w is not None and w.slug == f"eth-updown-5m-{S}"
        assert fake.http_log.count(f"/gamma/events?slug=eth-updown-5m-{S}") == 3
        fake.fail_next = 100
        with pytest.raises(DiscoveryError):
            await disc.series_window(spec, S)
        t.cancel()
        assert ticks > 5  # the event loop kept running during the backoff sleeps

    run(_with_fake(body))


def test_transport_error_is_discovery_error() -> None:
    async def body() -> None:
        async with httpx.AsyncClient(timeout=0.5) as http:
            disc = Discovery(http, "http://127.0.0.1:9/gamma", "http://127.0.0.1:9/clob", attempts=2, backoff_s=0.01)
            with pytest.raises(DiscoveryError):
                await disc.series_window(parse_market("BTC-15M"), S)

    run(body())
