"""The trade record reaches the store exactly once (real processes, real signals): a paper trader (always buy Up,
settling every window, tripping its kill switch) and an archiver are SIGKILLed again and again while states
flow; at the end the archive of ``trades/{trader}/...`` equals the trader's stream entry for entry, once each."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import msgpack
import pytest

from archiver_svc.trades import load_trades
from common import keys
from common.artefact import promote
from common.policy import BUY_UP
from common.store import LocalStore
from tests.common.test_alerts import Receiver
from tests.trader_svc.helpers import T0, save_always
from tests.trader_svc.test_state import add

pytestmark = pytest.mark.slow
P, TID = "arch-trades-pol", "t-archived"
MARKETS = ("BTC-15M", "ETH-15M")
W = 2_000


HOOK = {"url": ""}  # the local webhook receiver of the running test


def _env(redis_url: str, store: LocalStore) -> dict[str, str]:
    return dict(
        os.environ,
        FUSION_ALERT_WEBHOOK_URL=HOOK["url"],
        FUSION_REDIS_URL=redis_url,
        FUSION_STORE_URL=store.url,
        FUSION_METRICS_PORT="0",
        FUSION_ARCHIVE_WINDOW_S="1",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVE_CLAIM_IDLE_MS="1500",
        FUSION_ARCHIVER_ID="trades-archiver",
        FUSION_LOG_LEVEL="WARNING",
        FUSION_POSITION_USD="30",
        FUSION_MAX_DAILY_LOSS_USD="130",
        FUSION_MAX_EXPOSURE_USD="100",
        FUSION_TICK_MS="100",
        PYTHONPATH=os.getcwd(),
    )


def trader(redis_url: str, store: LocalStore) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "trader_svc", "--policy", P, "--trader", TID]
    for m in MARKETS:
        args += ["--market", m]
    return subprocess.Popen(args, env=_env(redis_url, store), stderr=subprocess.DEVNULL)


def archiver(redis_url: str, store: LocalStore, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "archiver_svc", *extra], env=_env(redis_url, store),
                            stderr=subprocess.DEVNULL)  # fmt: skip


def window(r, k: int) -> None:
    """Window ``k`` of both markets; from its 5th tick on it says how window ``k - 1`` resolved (Up won the first
    two windows, then lost: the day's loss trips the kill switch and opens are refused)."""
    for i in range(20):
        tick = T0 + k * W + i * 100
        for m in MARKETS:
            add(r, m, tick, W, prev_settle=(float(k <= 2) if k and i >= 5 else None), t0=T0)
        time.sleep(0.02)


def stream_records(r) -> tuple[list[str], list[dict]]:
    got = r.xrange(keys.trades_stream(TID))
    return [e.decode() for e, _ in got], [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in got]


def test_trade_archive_equals_stream_exactly_once_through_sigkills(r, redis_url, tmp_path) -> None:
    rng = random.Random(13)
    hook = Receiver()
    HOOK["url"] = hook.url
    store = LocalStore(tmp_path / "store")
    save_always(store, P, "buy-up", BUY_UP)
    promote(store, P, "buy-up")
    tr, ar = trader(redis_url, store), archiver(redis_url, store)
    kills = collections.Counter[str]()
    try:
        deadline = time.monotonic() + 90
        while not r.exists(keys.trader_status_key(TID)):
            assert tr.poll() is None and time.monotonic() < deadline, "trader did not start"
            time.sleep(0.1)
        for k in range(36):
            window(r, k)
            if k % 3 == 2:  # the archiver dies every ~1.2 s (mid-write, mid-read, with windows buffered)
                ar.send_signal(signal.SIGKILL)
                ar.wait(10)
                kills["archiver"] += 1
                time.sleep(rng.uniform(0.0, 0.5))
                ar = archiver(redis_url, store)
            if k in (11, 23):  # the trader dies holding positions; restarts from its committed state
                tr.send_signal(signal.SIGKILL)
                tr.wait(10)
                kills["trader"] += 1
                tr = trader(redis_url, store)
                time.sleep(1.0)
        time.sleep(2.0)
    finally:
        for p in (tr, ar):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    fin = subprocess.run([sys.executable, "-m", "archiver_svc", "--once", "--final"], env=_env(redis_url, store),
                         capture_output=True, timeout=120)  # fmt: skip
    assert fin.returncode == 0, fin.stderr.decode()[-2000:]

    ids, recs = stream_records(r)
    archived = load_trades(store, TID)
    assert archived.problems == []
    assert len(ids) > 200 and kills == {"archiver": 12, "trader": 2}
    assert len(set(archived.ids)) == len(archived.ids)  # once
    assert archived.ids == ids and archived.records == recs  # exactly the stream, in order
    types = collections.Counter(x["type"] for x in recs)
    assert {"decision", "fill", "refused", "kill", "day"} <= set(types), types
    assert all(x["model"] == "buy-up" for x in recs if x["type"] in ("decision", "fill", "refused"))
    assert {x["kind"] for x in recs if x["type"] == "fill"} >= {"open", "settle"}
    keys_ = [i.key for i in store.list("trades/") if not i.key.endswith("/summary.json")]
    assert len(keys_) > 10 and all(k.startswith(f"trades/{TID}/") and k.endswith(".msgpack.gz") for k in keys_)
    # the daily summary beside the records, and the kill switch told to people once (a real webhook POST)
    (day,) = {k.split("/")[2] for k in keys_}
    summ = json.loads(store.get(f"trades/{TID}/{day}/summary.json"))
    fills = [x for x in recs if x["type"] == "fill"]
    assert summ["records"] == len(recs) and summ["kill_trips"] == types["kill"] == 1
    assert summ["models"]["buy-up"]["pnl_usd"] == pytest.approx(sum(x["realised"] for x in fills))
    assert summ["models"]["buy-up"]["trades"] == sum(x["kind"] == "open" for x in fills)
    hook.close()
    assert [b["kind"] for b in hook.bodies] == ["kill-switch"] and hook.bodies[0]["fields"]["trader"] == TID
    # nothing of the trader's was dropped or parked on the way
    assert not [e for e in r.xrange(keys.DEAD_LETTER_STREAM) if keys.trades_stream(TID).encode() in str(e).encode()]
