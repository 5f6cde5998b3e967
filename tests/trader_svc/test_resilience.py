"""The trader under faults: Redis down for seconds (waits, logs once, resumes with its state), a stream whose
top moves below its cursor (resumes from the real top), a corrupt champion.json (reported, holds, recovers)."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import redis

from common import keys
from common.artefact import promote
from common.metrics import snapshot
from common.policy import BUY_UP
from common.schema import entry_id
from common.store import LocalStore
from tests.trader_svc.helpers import T0, encoded, save_always, save_good
from tests.trader_svc.test_service import wait_for
from tests.trader_svc.test_state import add, records
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "res-pol"
M = "BTC-15M"


def cfg(tid: str) -> TraderConfig:
    return TraderConfig(tid, P, [M], PaperConfig(position_usd=40.0), tick_ms=100, block_ms=10, status_every_s=0.05)


def test_stream_top_below_the_cursor_resumes_from_the_real_top(r, redis_url, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    c = cfg("t-cur")
    c.cursor_check_s = 0.2
    t = Trader(c, redis_url, store)
    t.start()
    rng = np.random.default_rng(3)
    s = keys.states_stream(M)
    try:
        r.xadd(s, {keys.PAYLOAD_FIELD: encoded(M, T0, rng)}, id=entry_id(T0))
        assert t.poll_once() == 1
        future = T0 + 10 * 365 * 86_400_000
        r.xadd(s, {keys.PAYLOAD_FIELD: encoded(M, future, rng)}, id=entry_id(future))
        t.poll_once()  # the trader's cursor is in the future now
        r.xdel(s, entry_id(future))  # the publisher removes the forged entry and sets the stream back
        r.execute_command("XSETID", s, entry_id(T0))
        ticks = [T0 + 100 * i for i in range(1, 21)]
        for tick in ticks:
            r.xadd(s, {keys.PAYLOAD_FIELD: encoded(M, tick, rng)}, id=entry_id(tick))
            t.poll_once()
            time.sleep(0.06)
        decided = [x["tick"] for x in records(r, "t-cur") if x["type"] == "decision"]
        assert ticks[-1] in decided and len([x for x in decided if x in ticks]) >= 10
        assert t.status()["cursor_resets"] == 1
    finally:
        t.close()


def test_redis_down_waits_logs_once_and_resumes_with_its_state(private_redis, tmp_path, caplog) -> None:
    store = LocalStore(tmp_path / "store")
    save_always(store, P, "buy-up", BUY_UP)
    promote(store, P, "buy-up")
    c = cfg("t-down")
    c.status_every_s = 10.0
    t = Trader(c, private_redis.url, store)
    r = redis.Redis.from_url(private_redis.url)
    runner = threading.Thread(target=t.run, daemon=True)
    runner.start()
    assert t.ready.wait(10)
    caplog.set_level(logging.INFO, logger="trader")
    try:
        add(r, M, T0 + 100)
        wait_for(lambda: M in t.engine.pos, what="open")
        shares = t.engine.pos[M].shares
        private_redis.kill()
        time.sleep(2.0)  # the tick loop hits the outage many times
        assert runner.is_alive()
        private_redis.restart()
        r = redis.Redis.from_url(private_redis.url)
        add(r, M, T0 + 200)
        wait_for(lambda: t.stats.last_tick.get(M) == T0 + 200, timeout=20, what="decision after the outage")
        assert runner.is_alive() and t.engine.pos[M].shares == shares
        down = [rec for rec in caplog.records if rec.getMessage() == "redis unavailable; waiting"]
        wait_for(lambda: any(rec.getMessage() == "redis back" for rec in caplog.records), what="back")
        back = [rec for rec in caplog.records if rec.getMessage() == "redis back"]
        assert len(down) == 1 and len(back) == 1
        assert snapshot()["fusion_trader_redis_outages_total{trader=t-down}"] == 1.0
    finally:
        t.stop()
        runner.join(10)
        r.close()
    assert not runner.is_alive()


def test_corrupt_champion_pointer_holds_reports_and_recovers(r, redis_url, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    store.put(f"models/{P}/champion.json", b'{"version": "v1", "sha2')  # truncated write
    t = Trader(cfg("t-champ"), redis_url, store)
    t.start()  # used to raise JSONDecodeError here
    try:
        assert t.model is None
        st = t.status()
        assert st["champion_error"] and "champion.json" in st["champion_error"]
        assert snapshot()["fusion_trader_champion_unreadable{trader=t-champ}"] == 1.0
        add(r, M, T0 + 100)
        assert t.poll_once() == 1  # holds: decides "hold" with no model
        promote(store, P, "v1")  # a good pointer again (no event): the trader notices by itself
        wait_for(lambda: t._incoming or t.model, what="champion reloaded")
        t.poll_once()
        assert t.model is not None and t.model.version == "v1"
        assert t.status()["champion_error"] is None
    finally:
        t.close()


@pytest.mark.parametrize("how", ["store", "meta"])
def test_oversized_model_refused_before_reading_old_one_stays(r, redis_url, tmp_path, how) -> None:
    from common.artefact import publish_model_updated

    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    promote(store, P, "v1")
    c = cfg("t-size")
    c.max_model_bytes = 64 * 1024
    t = Trader(c, redis_url, store)
    t.start()
    try:
        ref = save_good(store, P, "v2", seed=2)
        key = f"models/{P}/v2/model.safetensors"
        if how == "store":  # the object itself is big (padding after the safetensors payload)
            store.put(key, store.get(key) + b"\0" * (1 << 20))
        else:  # meta.json declares a big file
            meta = json.loads(store.get(f"models/{P}/v2/meta.json"))
            meta["size_bytes"] = 500 << 20
            store.put(f"models/{P}/v2/meta.json", json.dumps(meta).encode())
        publish_model_updated(r, P, {"version": "v2", "uri": ref.uri, "sha256": ref.sha256})
        wait_for(lambda: t.stats.rejected, what="rejection")
        t.poll_once()
        assert t.model.version == "v1" and not t._incoming
        assert t.stats.rejected[0]["reason"].startswith("size")
    finally:
        t.close()
