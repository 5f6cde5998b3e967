"""The observer end to end: venue simulator/replayer websockets -> observer -> real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import redis

from common import keys
from common.markets import parse_market
from common.schema import RAW_INDEX, decode_state, tick_of_entry_id
from common.settings import Settings
from observer_svc.service import Observer
from observer_svc.sim.recorded import RecordedDriver
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread

ROOT = Path(__file__).resolve().parents[2]


def _settings(redis_url: str, sim_url: str, **kw: object) -> Settings:
    return Settings(redis_url=redis_url, sim_url=sim_url, **kw)  # type: ignore[arg-type]


def _run(settings: Settings, markets: list[str], duration: float | None = None) -> Observer:
    obs = Observer(settings, [parse_market(m) for m in markets])
    asyncio.run(obs.run(duration_s=duration))
    return obs


def _entries(r: redis.Redis, market: str) -> list[tuple[bytes, bytes]]:
    return [(eid, f[b"d"]) for eid, f in r.xrange(keys.states_stream(market))]


def _assert_gap_free(ids: list[bytes], tick_ms: int = 500) -> None:
    ticks = np.array([tick_of_entry_id(i) for i in ids])
    assert len(ticks) > 2
    assert np.all(np.diff(ticks) == tick_ms), f"gaps at {ticks[1:][np.diff(ticks) != tick_ms][:5]}"


def test_recorded_binance_replay_is_byte_identical(r: redis.Redis, redis_url: str, recorded_data: Path) -> None:
    spot = recorded_data / "binance_raw_ws_spot__hftbacktest" / "spot"
    runs = []
    for _ in range(2):
        r.flushall()
        with SimServerThread(RecordedDriver(spot, None, speed=0, symbols=["BTCUSDT"])) as sim:
            s = _settings(redis_url, sim.url, feed="replay", binance_kind="spot",
                          binance_streams=["depth@100ms", "bookTicker", "trade"])  # fmt: skip
            obs = _run(s, ["BTC-15M"], duration=120)
        runs.append(_entries(r, "BTC-15M"))
        assert obs.summary()["publish_errors"] == 0
    a, b = runs
    # 60 s of recorded frames (tests/fixtures/real) at 500 ms ticks
    assert 110 <= len(a) <= 125, len(a)
    assert a == b  # same IDs, same bytes
    _assert_gap_free([eid for eid, _ in a])
    last = decode_state(a[-1][1])
    assert 50_000 < last.get("bn_last_px") < 70_000 and last.get("bn_bid") < last.get("bn_ask")
    # 60 s of data over two minute bars: the 1-minute lag exists, 5-minute and 1-hour statistics honestly do not
    assert last.get("bn_trades_10s") > 0 and np.isfinite(last.get("bn_close_1m"))
    assert np.isnan(last.get("bn_close_5m")) and np.isnan(last.get("bn_rv_1h"))


def test_rollover_and_malformed_frames_keep_the_stream_gap_free(r: redis.Redis, redis_url: str) -> None:
    # 5-minute windows at 60x: a window passes every 5 s of wall time
    drv = SyntheticDriver(["BTC-5M"], seed=3, speed=60.0)
    with SimServerThread(drv) as sim:
        s = _settings(redis_url, sim.url, feed="sim")
        obs = Observer(s, [parse_market("BTC-5M")])

        async def main() -> None:
            task = asyncio.create_task(obs.run(duration_s=9))
            await asyncio.sleep(3)
            async with httpx.AsyncClient() as c:
                for what in ("binance_garbage", "poly_garbage"):
                    resp = await c.get(f"{sim.url}/sim/control", params={"inject": what})
                    assert resp.status_code == 200
            await task

        asyncio.run(main())
    entries = _entries(r, "BTC-5M")
    _assert_gap_free([e for e, _ in entries])
    states = [decode_state(p) for _, p in entries]
    slugs = [st.pm.slug if st.pm else None for st in states]
    switches = [i for i in range(1, len(slugs)) if slugs[i] != slugs[i - 1]]
    assert switches, "no rollover seen"
    for i in switches:
        st = states[i]
        assert st.pm is not None and st.tick_ms >= st.pm.start_ms  # the new window from its first tick
        assert states[i - 1].tick_ms < st.pm.start_ms
        assert np.isfinite(st.get("up_ask_px_0")) or np.isfinite(st.get("up_bid_px_0"))
    bn = obs.binance.stats()
    assert sum(bn["parse_errors"].values()) >= 1, bn  # counted, skipped, observer kept going
    assert obs.summary()["publish_errors"] == 0
    # states after the garbage still fresh
    assert states[-1].get("age_binance_ms") < 5000 and RAW_INDEX


def test_two_replicas_one_gap_free_stream_and_sigkill(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    drv = SyntheticDriver(["BTC-15M"], seed=5, speed=4.0)
    with SimServerThread(drv) as sim:
        env = {**os.environ, "FUSION_REDIS_URL": redis_url, "FUSION_SIM_URL": sim.url, "FUSION_FEED": "sim",
               "FUSION_MARKETS": "BTC-15M", "PYTHONPATH": str(ROOT)}  # fmt: skip

        def start(name: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "observer_svc"], env=env, cwd=tmp_path,
                                    stdout=open(tmp_path / f"{name}.out", "wb"), stderr=subprocess.STDOUT)  # fmt: skip

        a, b = start("a"), start("b")
        try:
            deadline = time.time() + 20
            while r.xlen(keys.states_stream("BTC-15M")) < 20 and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(2)
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            n_at_kill = r.xlen(keys.states_stream("BTC-15M"))
            time.sleep(4)
        finally:
            b.send_signal(signal.SIGTERM)
            b.wait(20)
            if a.poll() is None:
                a.kill()
    ids = [eid for eid, _ in r.xrange(keys.states_stream("BTC-15M"))]
    assert len(ids) > n_at_kill + 10  # the survivor kept the stream going
    _assert_gap_free(ids)
    out_b = (tmp_path / "b.out").read_text()
    assert "duplicates_refused=" in out_b
    dup = int(out_b.split("duplicates_refused=")[1].split()[0])
    added = int(out_b.split("states_added=")[1].split()[0])
    assert dup > 0 and added > 0, out_b[-500:]  # both replicas published; Redis refused the copies
