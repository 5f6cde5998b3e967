"""The simulator over real sockets: websockets clients and httpx against a live SimServer."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from common.settings import Settings
from observer_svc.sim import SimServer, SimServerThread, SyntheticDriver, token_ids

EPOCH = 1_767_225_600_000


def _connect(url: str, **kw):
    """A client that closes promptly even when it stopped reading a fast stream (websockets pauses
    reading once its own queue is full, so the close handshake would wait for close_timeout)."""
    return websockets.connect(url, close_timeout=0.5, **kw)


STREAMS = "btcusdt@aggTrade/btcusdt@kline_1m/btcusdt@bookTicker/btcusdt@depth@100ms"


def _ws(srv: SimServer) -> str:
    return srv.url.replace("http://", "ws://")


async def _collect(ws, seconds: float, max_n: int = 100_000) -> list:
    out: list = []
    end = time.monotonic() + seconds
    while len(out) < max_n and (left := end - time.monotonic()) > 0:
        try:
            out.append(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
    return out


def test_binance_futures_shapes_only_requested_streams() -> None:
    async def main() -> None:
        d = SyntheticDriver(["BTC-15M", "ETH-15M"], seed=1, speed=20, epoch_ms=EPOCH)
        async with SimServer(d) as srv:
            urls = Settings(feed="sim", sim_url=srv.url).venue_urls()
            async with _connect(f"{urls['binance_ws']}/stream?streams={STREAMS}") as ws:
                frames = [json.loads(m) for m in await _collect(ws, 2.5)]
        by = {}
        for f in frames:
            assert set(f) == {"stream", "data"}
            by.setdefault(f["stream"], []).append(f["data"])
        assert set(by) == set(STREAMS.split("/"))  # nothing of ETH, nothing unrequested
        a = by["btcusdt@aggTrade"][0]
        assert list(a) == ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"]
        assert a["e"] == "aggTrade" and a["s"] == "BTCUSDT" and isinstance(a["m"], bool)
        assert all(isinstance(a[k], int) for k in "EafLT" if k in a) and isinstance(a["p"], str)
        float(a["p"]), float(a["q"])
        b = by["btcusdt@bookTicker"][0]
        assert list(b) == ["e", "u", "s", "b", "B", "a", "A", "T", "E"] and float(b["b"]) < float(b["a"])
        dd = by["btcusdt@depth@100ms"]
        assert list(dd[0]) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]
        assert all(x["pu"] == prev["u"] for prev, x in zip(dd, dd[1:], strict=False))
        k = by["btcusdt@kline_1m"]
        assert 18 <= len(k) <= 27 and k[0]["k"]["i"] == "1m" and isinstance(k[0]["k"]["n"], int)
        assert all(x["E"] % 2000 == 0 for x in k)  # pushed every 2 s of sim time
        assert 20 * 2.5 * 15 < len(by["btcusdt@aggTrade"]) < 20 * 2.5 * 60  # ~30/s of sim time

    asyncio.run(main())


def test_rest_depth_snapshot_consistent_with_stream() -> None:
    """Binance's futures procedure: buffer, snapshot, first U <= id <= u, then a pu chain."""

    async def main() -> None:
        d = SyntheticDriver(["BTC-15M"], seed=4, speed=20, epoch_ms=EPOCH)
        async with SimServer(d) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            async with _connect(f"{_ws(srv)}/binance/stream?streams=btcusdt@depth") as ws:
                buf = [json.loads(m)["data"] for m in await _collect(ws, 0.3)]
                r = await http.get("/binance/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})
                snap = r.json()
                assert list(snap) == ["lastUpdateId", "E", "T", "bids", "asks"]
                buf += [json.loads(m)["data"] for m in await _collect(ws, 0.5)]
                book = {"b": dict(snap["bids"]), "a": dict(snap["asks"])}
                last = snap["lastUpdateId"]
                events = [e for e in buf if e["u"] >= last]
                assert events[0]["U"] <= last <= events[0]["u"]
                prev = None
                for e in events:
                    assert prev is None or e["pu"] == prev
                    prev = e["u"]
                    for s in ("b", "a"):
                        for p, q in e[s]:
                            book[s].pop(p, None) if float(q) == 0 else book[s].__setitem__(p, q)
                snap2 = (await http.get("/binance/fapi/v1/depth", params={"symbol": "BTCUSDT"})).json()
                while prev < snap2["lastUpdateId"]:
                    e = json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]
                    assert e["pu"] == prev
                    prev = e["u"]
                    for s in ("b", "a"):
                        for p, q in e[s]:
                            book[s].pop(p, None) if float(q) == 0 else book[s].__setitem__(p, q)
                assert prev == snap2["lastUpdateId"]
                assert dict(snap2["bids"]) == book["b"] and dict(snap2["asks"]) == book["a"]
            t = (await http.get("/binance/fapi/v1/time")).json()["serverTime"]
            assert isinstance(t, int) and EPOCH < t < EPOCH + 120_000
            bad = await http.get("/binance/fapi/v1/depth", params={"symbol": "NOPE"})
            assert bad.status_code == 400 and bad.json()["code"] == -1121

    asyncio.run(main())


def test_discovery_endpoints_current_and_next_three() -> None:
    d = SyntheticDriver(["BTC-15M"], seed=1, speed=20, epoch_ms=EPOCH + 100_000)
    with SimServerThread(d) as st, httpx.Client(base_url=st.url) as http:
        start = EPOCH // 1000
        for k in range(4):
            slug = f"btc-updown-15m-{start + 900 * k}"
            ev = http.get("/gamma/events", params={"slug": slug}).json()
            assert len(ev) == 1 and ev[0]["slug"] == slug
            assert ev[0]["endDate"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 900 * (k + 1)))
            m = ev[0]["markets"][0]
            assert json.loads(m["clobTokenIds"]) == list(token_ids(slug))  # JSON-encoded strings, as Gamma
            assert json.loads(m["outcomes"]) == ["Up", "Down"] and m["conditionId"].startswith("0x")
            cm = http.get(f"/clob/markets/{m['conditionId']}").json()
            assert cm["active"] is True and cm["closed"] is False
            assert [(t["outcome"], t["token_id"]) for t in cm["tokens"]] == list(
                zip(["Up", "Down"], token_ids(slug), strict=True)
            )
            assert all(isinstance(t["price"], float) for t in cm["tokens"])
        assert http.get("/gamma/events", params={"slug": f"btc-updown-15m-{start + 3600}"}).json() == []
        assert http.get("/clob/markets/0xdead").status_code == 404
        book = http.get("/clob/book", params={"token_id": token_ids(f"btc-updown-15m-{start}")[0]}).json()
        assert {"market", "asset_id", "timestamp", "bids", "asks", "tick_size"} <= set(book)
        assert all(isinstance(x["price"], str) and isinstance(x["size"], str) for x in book["bids"] + book["asks"])
        rows = http.get("/binance/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": 65}).json()
        assert len(rows) == 65 and len(rows[0]) == 12 and isinstance(rows[0][0], int) and isinstance(rows[0][4], str)


async def _poly_subscribe(srv: SimServer, custom: bool = True):
    slug = f"btc-updown-15m-{EPOCH // 1000}"
    up, down = token_ids(slug)
    ws = await _connect(f"{_ws(srv)}/polymarket/ws/market", max_size=None)
    await ws.send(json.dumps({"assets_ids": [up, down], "type": "market", "custom_feature_enabled": custom}))
    return ws, up, down


def _events(frames: list) -> list[dict]:
    out = []
    for m in frames:
        if m == "PONG":
            continue
        j = json.loads(m)
        out += j if isinstance(j, list) else [j]
    return out


def test_polymarket_market_channel_shapes_and_ping() -> None:
    async def main() -> None:
        d = SyntheticDriver(["BTC-15M"], seed=1, speed=20, epoch_ms=EPOCH)
        async with SimServer(d) as srv:
            ws, up, down = await _poly_subscribe(srv)
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert isinstance(first, list) and {e["asset_id"] for e in first} == {up, down}
            assert all(e["event_type"] == "book" and isinstance(e["timestamp"], str) for e in first)
            await ws.send("PING")
            frames = await _collect(ws, 2.5)
            assert "PONG" in frames
            assert any(m.startswith("[") for m in frames if m != "PONG")  # some frames batch events
            evs = _events(frames)
            kinds = {e["event_type"] for e in evs}
            assert {"price_change", "best_bid_ask"} <= kinds
            pc = next(e for e in evs if e["event_type"] == "price_change")
            assert list(pc) == ["market", "price_changes", "timestamp", "event_type"] and pc["timestamp"].isdigit()
            ch = pc["price_changes"][0]
            assert set(ch) == {"asset_id", "price", "size", "side", "hash", "best_bid", "best_ask"}
            assert all(isinstance(v, str) for v in ch.values())
            assert {c["asset_id"] for c in pc["price_changes"]} == {up, down}  # one frame, both tokens
            await ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": [up, down]}))
            await _collect(ws, 0.3)
            assert _events(await _collect(ws, 0.5)) == []
            await ws.close()

    asyncio.run(main())


def test_rollover_resolves_with_market_resolved() -> None:
    async def main() -> None:
        d = SyntheticDriver(["BTC-5M"], seed=1, speed=200, epoch_ms=EPOCH + 285_000)
        async with SimServer(d) as srv:
            slug = f"btc-updown-5m-{EPOCH // 1000}"
            up, down = token_ids(slug)
            ws = await _connect(f"{_ws(srv)}/polymarket/ws/market")
            await ws.send(json.dumps({"assets_ids": [up, down], "type": "market", "custom_feature_enabled": True}))
            evs: list[dict] = []
            for _ in range(20):  # 0.15 s of wall time at 200x; up to 10 s on a busy machine
                evs += _events(await _collect(ws, 0.5))
                kinds = {e["event_type"] for e in evs}
                if {"market_resolved", "new_market"} <= kinds:
                    break
            res = [e for e in evs if e["event_type"] == "market_resolved"]
            assert len(res) == 1 and res[0]["winning_asset_id"] in (up, down)
            assert res[0]["timestamp"] == str(EPOCH + 300_000)
            assert any(e["event_type"] == "new_market" for e in evs)
            await ws.close()

    asyncio.run(main())


def test_silence_control_keeps_pong() -> None:
    async def main() -> None:
        d = SyntheticDriver(["BTC-15M"], seed=1, speed=20, epoch_ms=EPOCH)
        async with SimServer(d) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            ws, _, _ = await _poly_subscribe(srv)
            assert _events(await _collect(ws, 0.5))
            r = await http.get("/sim/control", params={"poly_silence_s": 40})
            assert r.status_code == 200 and r.json()["ok"]
            await _collect(ws, 0.2)  # drain what was already queued
            await ws.send("PING")
            quiet = await _collect(ws, 1.2)  # ~24 sim-seconds
            assert quiet == ["PONG"]
            back = _events(await _collect(ws, 2.0))
            assert back, "market data resumes after the silence"
            st = (await http.get("/sim/status")).json()
            assert st["connections"]["polymarket"] == 1 and st["frames_sent"]["polymarket"] > 0
            await ws.close()

    asyncio.run(main())


def test_garbage_injection_and_drop() -> None:
    async def main() -> None:
        d = SyntheticDriver(["BTC-15M"], seed=1, speed=20, epoch_ms=EPOCH)
        async with SimServer(d) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            bws = await _connect(f"{_ws(srv)}/binance/stream?streams=btcusdt@aggTrade", max_size=None)
            pws, _, _ = await _poly_subscribe(srv)
            small = await _connect(f"{_ws(srv)}/binance/stream?streams=btcusdt@aggTrade")  # 1 MiB limit
            await asyncio.sleep(0.3)
            r = await http.get("/sim/control", params={"inject": "binance_garbage"})
            assert r.json()["injected"] == 2 * 7  # two Binance connections
            r = await http.get("/sim/control", params={"inject": "poly_garbage"})
            assert r.json()["injected"] == 6
            for ws, venue in ((bws, "binance"), (pws, "polymarket")):
                frames = await _collect(ws, 0.8)
                bad, kinds, non_obj, wrong_type = 0, set(), 0, 0
                for m in frames:
                    if m == "PONG":
                        continue
                    try:
                        j = json.loads(m)
                    except ValueError:
                        bad += 1
                        continue
                    if not isinstance(j, dict | list) or (isinstance(j, list) and j and not isinstance(j[0], dict)):
                        non_obj += 1
                        continue
                    for e in j if isinstance(j, list) else [j]:
                        e = e.get("data", e)
                        kinds.add(e.get("e") or e.get("event_type"))
                        wrong_type += isinstance(e.get("E"), str) or isinstance(e.get("market"), int)
                assert bad == 1 and non_obj >= 1 and wrong_type >= 1, (venue, bad, non_obj, wrong_type)
                assert kinds & {"mysteryEvent", "mystery_event"}
                assert any(len(m) > 1 << 20 for m in frames)  # the oversize frame
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await _collect(small, 1.0)
                await small.recv()
            assert ei.value.sent is not None and ei.value.sent.code == 1009  # the client refused the oversize frame
            r = await http.get("/sim/control", params={"drop": "binance"})
            assert r.json()["dropped"] >= 1
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await _collect(bws, 1.0)
                await bws.recv()
            assert ei.value.rcvd is not None and ei.value.rcvd.code == 1001
            await pws.close()

    asyncio.run(main())


def test_deterministic_over_the_wire_for_a_seed() -> None:
    async def grab() -> list:
        d = SyntheticDriver(["BTC-15M"], seed=11, speed=0, epoch_ms=EPOCH)
        async with SimServer(d) as srv, _connect(f"{_ws(srv)}/binance/stream?streams={STREAMS}") as ws:
            return [await asyncio.wait_for(ws.recv(), 5) for _ in range(2000)]

    a, b = asyncio.run(grab()), asyncio.run(grab())
    assert a == b and len(set(a)) > 1900


def test_thread_server_start_stop_and_spot_shapes() -> None:
    d = SyntheticDriver(["BTC-15M"], seed=1, speed=20, epoch_ms=EPOCH, binance_kind="spot")
    st = SimServerThread(d).start()
    try:

        async def main() -> list:
            url = st.url.replace("http://", "ws://")
            async with _connect(
                f"{url}/binance/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
            ) as ws:
                return [json.loads(m) for m in await _collect(ws, 1.0)]

        frames = asyncio.run(main())
        by = {f["stream"]: f["data"] for f in frames}
        assert list(by["btcusdt@bookTicker"]) == ["u", "s", "b", "B", "a", "A"]
        assert list(by["btcusdt@depth@100ms"]) == ["e", "E", "s", "U", "u", "b", "a"]
        assert list(by["btcusdt@trade"]) == ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
        assert httpx.get(f"{st.url}/binance/api/v3/time").json()["serverTime"] > EPOCH
        port = st.port
    finally:
        st.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/sim/status", timeout=1)


def test_speed_change_mid_run_goes_on_at_the_new_rate() -> None:
    """The demo slows the simulator down for its trading phase: sim time then advances at the new rate,
    from where it was (no jump, no burst of catch-up frames)."""
    d = SyntheticDriver(["BTC-5M"], seed=3, speed=60, epoch_ms=EPOCH)
    st = SimServerThread(d).start()
    try:

        async def main() -> list[tuple[float, int]]:
            url = st.url.replace("http://", "ws://")
            seen: list[tuple[float, int]] = []
            async with _connect(f"{url}/binance/stream?streams=btcusdt@aggTrade") as ws:
                t_end = time.monotonic() + 3.0
                while time.monotonic() < t_end:
                    f = json.loads(await asyncio.wait_for(ws.recv(), 2.0))
                    seen.append((time.monotonic(), int(f["data"]["E"])))
                    if d.speed == 60 and time.monotonic() > t_end - 1.5:
                        d.speed = 6.0
            return seen

        seen = asyncio.run(main())
    finally:
        st.stop()
    t_switch = seen[-1][0] - 1.5
    fast = [(w, e) for w, e in seen if w < t_switch - 0.2]
    slow = [(w, e) for w, e in seen if w > t_switch + 0.3]

    def rate(xs: list[tuple[float, int]]) -> float:
        return (xs[-1][1] - xs[0][1]) / 1000 / (xs[-1][0] - xs[0][0])

    assert 40 < rate(fast) < 80 and 3 < rate(slow) < 9
