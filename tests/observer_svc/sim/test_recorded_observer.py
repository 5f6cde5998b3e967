"""The documented recorded replay, as processes: `fusion sim recorded` (Binance capture excerpt + a synthetic
1 Hz Polymarket CSV) and `fusion observe --feed replay` start on their own, no Polymarket frame is lost at
any speed, and a replay that delivers nothing is an error with a reason (non-zero exit)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from common import keys
from common.redisproc import free_port
from common.schema import POLY_BOOK_EMPTY, decode_state
from tests.fixtures.synthetic_polymarket import write_csv

ROOT = Path(__file__).resolve().parents[3]
SPOT = "binance_raw_ws_spot__hftbacktest/spot"


def _sim(tmp: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "observer_svc.sim", "recorded", "--port", str(port), *args],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp,
                         stdout=open(tmp / "sim.out", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            httpx.get(f"{url}/sim/status", timeout=1)
            return p, url
        except httpx.HTTPError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError((tmp / "sim.out").read_text())


def _observe(tmp: Path, url: str, redis_url: str, timeout: float = 60.0) -> tuple[int | None, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUSION_REDIS_URL": redis_url, "FUSION_BINANCE_KIND": "spot",
           "FUSION_BINANCE_STREAMS": "depth@100ms,bookTicker,trade", "FUSION_METRICS_PORT": "0"}  # fmt: skip
    cmd = [sys.executable, "-m", "observer_svc", "--market", "BTC-15M", "--feed", "replay", "--sim-url", url]
    out = open(tmp / "obs.out", "wb")  # noqa: SIM115 (the child writes it)
    p = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(10)
        rc = None
    return rc, (tmp / "obs.out").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("speed", ["0", "200", "0 --no-wait", "50 --no-wait"])
def test_documented_replay_starts_and_loses_no_polymarket_frame(
    tmp_path: Path, recorded_data: Path, redis_url: str, r: redis.Redis, speed: str
) -> None:
    poly = write_csv(tmp_path / "poly.csv", windows=2)  # the second window after the Binance capture ended
    with open(poly) as fh:
        n_rows = sum(1 for _ in csv.reader(fh)) - 1
    sim, url = _sim(tmp_path, ["--binance", str(recorded_data / SPOT), "--symbols", "BTCUSDT",
                               "--polymarket", str(poly), "--speed", *speed.split()])  # fmt: skip
    try:
        rc, out = _observe(tmp_path, url, redis_url)
        st = httpx.get(f"{url}/sim/status", timeout=5).json()
    finally:
        sim.terminate()
        sim.wait(10)
    assert rc == 0, f"observer rc={rc} (None: still running after 60 s: deadlock)\n{out[-2000:]}\n{st}"
    states = [decode_state(p[keys.PAYLOAD_FIELD]) for _, p in r.xrange(keys.states_stream("BTC-15M"))]
    in_rows = [s for s in states if s.pm is not None]
    assert len(in_rows) > 0.9 * len(states), (len(in_rows), len(states))
    empty = sum(1 for s in in_rows if s.flags & POLY_BOOK_EMPTY)
    assert empty < 0.05 * len(in_rows), (empty, len(in_rows))
    assert st["finished"] and st["dropped_unsubscribed"] == 0, st
    # an Up and a Down book per row: sent, or (rows before the Binance capture starts, when no client can know
    # the window yet) kept as the token's latest book, which the subscriber gets first
    assert st["frames_sent"]["polymarket"] + st["coalesced_before_start"] >= 2 * n_rows, str(st)
    assert st["frames_sent"]["polymarket"] > n_rows // 2, str(st)


@pytest.mark.slow
def test_replay_that_delivers_no_polymarket_book_is_an_error(
    tmp_path: Path, recorded_data: Path, redis_url: str
) -> None:
    """Polymarket rows at their recorded times (--no-align): none falls where the Binance capture is, so the
    observer's states have no book: it says so and exits non-zero."""
    poly = write_csv(tmp_path / "poly.csv", windows=1)
    sim, url = _sim(tmp_path, ["--binance", str(recorded_data / SPOT), "--symbols", "BTCUSDT",
                               "--polymarket", str(poly), "--no-align"])  # fmt: skip
    try:
        rc, out = _observe(tmp_path, url, redis_url)
    finally:
        sim.terminate()
        sim.wait(10)
    assert rc not in (0, None), out[-2000:]
    assert "replay" in out and "empty" in out, out[-2000:]
