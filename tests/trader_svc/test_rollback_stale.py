"""Issue 13: the trader swaps on ``model-rolled-back`` as on ``model-updated`` (between ticks, no tick missed) and
refuses hostile ones; a stale model (too old, another state schema, another feature set) is refused by the trader's
swap and by promote, with a clear reason, counted and alerted, and the current model stays."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest
import redis

from common import artefact, keys, metrics
from common.events import publish_model_rolled_back
from common.store import LocalStore
from tests.trader_svc.helpers import T0, encoded, good_meta, save_good, save_raw
from tests.wait import wait_until
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "rb-pol"
M = "BTC-15M"


def _wait(cond: Any, timeout: float = 15.0) -> None:
    wait_until(cond, timeout, step=0.01)


def _events(r: redis.Redis) -> list[dict]:
    return [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(keys.EVENTS_STREAM)]


def _trader(redis_url: str, store: LocalStore, tid: str, max_age_h: float = 0.0) -> Trader:
    cfg = TraderConfig(tid, P, [M], PaperConfig(), block_ms=10, model_max_age_h=max_age_h)
    t = Trader(cfg, redis_url, store)
    t.start()
    return t


def test_model_rolled_back_swaps_between_ticks_without_missing_one(r: redis.Redis, redis_url: str, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1", seed=1)
    save_good(store, P, "v2", seed=2)
    artefact.promote(store, P, "v1")
    artefact.promote(store, P, "v2")
    trader = _trader(redis_url, store, "t-rb")
    rng = np.random.default_rng(0)
    try:
        assert trader.model is not None and trader.model.version == "v2"
        tick = T0
        for _ in range(5):
            r.xadd(keys.states_stream(M), {keys.PAYLOAD_FIELD: encoded(M, tick, rng)}, id=f"{tick}-0")
            trader.poll_once()
            tick += 500
        ptr = artefact.rollback(store, P, r, reason="monitor: live below the hold-out")
        assert ptr["version"] == "v1" and artefact.champion(store, P)["version"] == "v1"
        ev = [e for e in _events(r) if e["type"] == "model-rolled-back"]
        assert ev and ev[-1]["version"] == "v1" and ev[-1]["previous"] == "v2"
        assert ev[-1]["reason"] == "monitor: live below the hold-out"
        _wait(lambda: trader._incoming)
        for _ in range(5):
            r.xadd(keys.states_stream(M), {keys.PAYLOAD_FIELD: encoded(M, tick, rng)}, id=f"{tick}-0")
            trader.poll_once()
            tick += 500
        assert trader.model.version == "v1"
        assert trader.stats.missed[M] == 0 and trader.stats.decisions == 10
        swaps = [s for s in trader.stats.swaps if s["to"] == "v1"]
        assert len(swaps) == 1 and swaps[0]["source"] == "model-rolled-back" and swaps[0]["from"] == "v2"
        recs = [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(keys.trades_stream("t-rb"))]
        decided = [x["model"] for x in recs if x["type"] == "decision"]
        assert decided == ["v2"] * 5 + ["v1"] * 5  # one model per tick, in event order
    finally:
        trader.close()


def test_hostile_model_rolled_back_events_are_refused(r: redis.Redis, redis_url: str, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    artefact.promote(store, P, "v1")
    ref2 = save_good(store, P, "v2", seed=3)
    trader = _trader(redis_url, store, "t-rbh")
    try:
        for v in ("../x", "a/b", "", None, 7):
            msg = {"v": 1, "type": "model-rolled-back", "policy": P, "version": v, "uri": ref2.uri,
                   "sha256": ref2.sha256, "previous": "v1", "reason": "x" * 10_000}  # fmt: skip
            r.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(msg, use_bin_type=True)})
        forged = {"v": 1, "type": "model-rolled-back", "policy": P, "version": "v2", "uri": ref2.uri,
                  "sha256": "0" * 64, "previous": "../../etc", "reason": "forged"}  # fmt: skip
        r.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(forged, use_bin_type=True)})
        _wait(lambda: len(trader.stats.rejected) >= 1)
        assert trader.model.version == "v1" and not trader._incoming
        assert trader.stats.rejected[0]["reason"].startswith("sha256") and trader.stats.rejected[0]["version"] == "v2"
        assert trader.stats.rejected[0]["source"] == "model-rolled-back"
        assert len(list(r.xrange(keys.DEAD_LETTER_STREAM))) == 5  # the bad names are parked, never followed
        with pytest.raises(ValueError):
            publish_model_rolled_back(r, P, {"version": "v2", "uri": "u", "sha256": "s"}, "../v1", "x")
    finally:
        trader.close()


@pytest.mark.parametrize("how", ["age", "schema", "feature_set"])
def test_stale_model_is_refused_by_the_trader_and_by_promote(how: str, r: redis.Redis, redis_url: str,
                                                             tmp_path) -> None:  # fmt: skip
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    artefact.promote(store, P, "v1", max_age_h=0)
    meta = good_meta()
    if how == "age":
        meta["created"] = "2020-01-01T00:00:00Z"
    elif how == "schema":
        meta["state_schema"] = 1
    else:
        meta["feature_set"] = "market-v2"
    ptr = save_raw(store, P, "old", __import__("common.policy", fromlist=["x"]).init_weights(5), meta=meta)
    stale = f"fusion_trader_models_stale_total{{trader=t-st-{how}}}"
    before = metrics.snapshot().get(stale, 0.0)
    trader = _trader(redis_url, store, f"t-st-{how}", max_age_h=24.0)
    try:
        artefact.publish_model_updated(r, P, ptr)
        _wait(lambda: trader.stats.rejected)
        rej = trader.stats.rejected[0]
        assert rej["version"] == "old" and rej["reason"].startswith("stale: ")
        word = {"age": "h old", "schema": "state schema", "feature_set": "feature set"}[how]
        assert word in rej["reason"], rej["reason"]
        assert trader.model.version == "v1" and not trader._incoming  # the current model stays
        assert metrics.snapshot().get(stale, 0.0) - before == 1
        assert any(e["type"] == "model-rejected" and e["version"] == "old" for e in _events(r))
    finally:
        trader.close()
    with pytest.raises(artefact.ModelError, match="stale"):
        artefact.promote(store, P, "old", r, max_age_h=24.0)
    assert artefact.champion(store, P)["version"] == "v1"
    if how != "age":  # schema and feature set are refused whatever the age limit
        with pytest.raises(artefact.ModelError, match="stale"):
            artefact.promote(store, P, "old", r, max_age_h=0)


def test_check_fresh_off_by_default_and_old_metas_pass() -> None:
    old = {"created": "2020-01-01T00:00:00Z"}  # no feature_set / state_schema recorded
    artefact.check_fresh(old)  # age limit off
    artefact.check_fresh({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, max_age_h=1)
    with pytest.raises(artefact.ModelRejected) as e:
        artefact.check_fresh({"created": "garbage"}, max_age_h=1)
    assert e.value.kind == "stale"
