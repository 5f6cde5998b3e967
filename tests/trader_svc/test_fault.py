"""Fault test (real processes, real signals): a trader SIGKILLed while it holds positions and restarted.

The shape of the reported incident (a $50 daily limit, a restart, -$112 in one day): an always-buy-Up policy
opens both markets in window 0, is SIGKILLed, window 0 resolves against it while it is down (the resolution is
only in window 1's states), it restarts in window 3. It must settle both positions exactly once from the
recorded states, trip the kill switch on that loss, refuse every open for the rest of the UTC day through a
second SIGKILL, and open again the next day.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common import keys
from common.artefact import promote
from common.policy import BUY_UP
from common.store import LocalStore
from tests.trader_svc.helpers import T0, save_always
from tests.trader_svc.test_state import add, records

pytestmark = pytest.mark.slow
P, TID = "fault-pol", "t-fault"
MARKETS = ("BTC-15M", "ETH-15M")
W = 2_000  # window length (tick time)
DAY_MS = 86_400_000


def spawn(redis_url: str, store: LocalStore) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FUSION_REDIS_URL=redis_url, FUSION_STORE_URL=store.url, FUSION_POSITION_USD="30",
               FUSION_MAX_DAILY_LOSS_USD="50", FUSION_MAX_EXPOSURE_USD="100", FUSION_TICK_MS="100",
               FUSION_METRICS_PORT="0", PYTHONPATH=os.getcwd())  # fmt: skip
    args = [sys.executable, "-m", "trader_svc", "--policy", P, "--trader", TID]
    for m in MARKETS:
        args += ["--market", m]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def status(r) -> dict:
    raw = r.get(keys.trader_status_key(TID))
    return json.loads(raw) if raw else {}


def wait(cond, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trader exited ({proc.returncode}) waiting for {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status {status_brief}")
        time.sleep(0.05)


status_brief: dict = {}


def window(r, k: int, prev_settle: float | None = None, day: int = 0, n: int = 20, pause: float = 0.02) -> None:
    """Publish window ``k`` (of day ``day``) for both markets; the previous window's resolution from tick 5 on."""
    t0 = T0 + day * DAY_MS
    for i in range(n):
        tick = t0 + k * W + i * 100
        for m in MARKETS:
            add(r, m, tick, W, prev_settle=prev_settle if i >= 5 else None, t0=t0)
        time.sleep(pause)


def decided(r, tick_from: int) -> set[str]:
    return {x["market"] for x in records(r, TID) if x["type"] == "decision" and x["tick"] >= tick_from}


def test_sigkill_while_holding_positions_limits_and_settlements_continue(r, redis_url, tmp_path) -> None:
    global status_brief
    store = LocalStore(tmp_path / "store")
    save_always(store, P, "buy-up", BUY_UP)
    promote(store, P, "buy-up")
    procs = [spawn(redis_url, store)]
    try:
        wait(lambda: status(r).get("model") == "buy-up", 60, "first start", procs[-1])
        window(r, 0)  # opens Up in both markets: 30 USD + fee each
        wait(lambda: len(status(r).get("pnl", {}).get("positions", {})) == 2, 20, "two positions", procs[-1])
        time.sleep(0.3)  # let the status catch up with the last decision of the window
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(10)
        window(r, 1, prev_settle=0.0)  # window 0 resolved: Up lost; only these states say so
        window(r, 2, prev_settle=1.0)  # (window 1's resolution: nobody held it)

        r.delete(keys.trader_status_key(TID))
        procs.append(spawn(redis_url, store))
        wait(lambda: status(r).get("running"), 60, "restart", procs[-1])
        st = status(r)["pnl"]
        status_brief = st
        assert st["positions"] == {} and st["settlements"] == 2 and st["kill_switch"] is True
        assert status(r)["state_source"] == "redis"
        assert st["day_pnl_usd"] == pytest.approx(-2 * (30 + 60 * 0.07 * 0.25), abs=1e-6)
        window(r, 3)  # the policy wants to buy again: refused, the limit holds across the restart
        wait(lambda: decided(r, T0 + 3 * W) == set(MARKETS), 20, "decisions in window 3", procs[-1])

        procs[-1].send_signal(signal.SIGKILL)  # a second kill, with the switch on
        procs[-1].wait(10)
        r.delete(keys.trader_status_key(TID))  # the dead one's status must not pass for the new one's
        procs.append(spawn(redis_url, store))
        wait(lambda: status(r).get("pnl", {}).get("kill_switch") is True, 60, "second restart", procs[-1])
        window(r, 4)
        wait(lambda: decided(r, T0 + 4 * W) == set(MARKETS), 20, "decisions in window 4", procs[-1])
        window(r, 0, day=1)  # the next UTC day: the switch resets, the policy opens again
        wait(lambda: len(status(r).get("pnl", {}).get("positions", {})) == 2, 20, "next-day opens", procs[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
    recs = records(r, TID)
    fills = [x for x in recs if x["type"] == "fill"]
    day0 = [x for x in fills if x["fill_tick"] < T0 + DAY_MS]
    opens = [x for x in day0 if x["kind"] == "open"]
    settles = [x for x in day0 if x["kind"] == "settle"]
    # every position settles exactly once, from the recorded resolution, after the restart
    assert sorted(x["market"] for x in opens) == sorted(MARKETS) and len(settles) == 2
    assert sorted(x["market"] for x in settles) == sorted(MARKETS)
    assert all(x["recovered"] and x["settle_up"] == 0.0 and x["fill_tick"] == T0 + W + 500 for x in settles)
    # the limit held: after the trip, no open for the rest of the day, whatever the restarts
    (kill,) = [i for i, x in enumerate(recs) if x["type"] == "kill"]
    assert not [x for x in recs[kill:] if x["type"] == "fill" and x["kind"] == "open" and x["fill_tick"] < T0 + DAY_MS]
    refused = [x for x in recs[kill:] if x["type"] == "refused" and "kill switch" in x["reason"]]
    assert {x["market"] for x in refused} == set(MARKETS)
    day_loss = -sum(x["realised"] for x in day0)
    assert day_loss == pytest.approx(62.1) and day_loss <= 50 + 100  # the limit + the exposure open at the trip
    # next day: opens again (two positions), the day's start equity carries the loss
    assert len([x for x in fills if x["fill_tick"] >= T0 + DAY_MS and x["kind"] == "open"]) == 2
