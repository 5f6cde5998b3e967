"""Issue 10, defect 4: a ``model-updated`` event (promote or rollback) whose version is outside the name
grammar is refused at parsing: never a store key, never re-broadcast, counted, logged once and parked."""

from __future__ import annotations

from typing import Any

import msgpack
import redis

from common import keys, metrics
from common.artefact import promote, publish_model_updated
from common.store import LocalStore
from tests.trader_svc.helpers import save_good
from tests.wait import wait_until
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "ev-pol"
HOSTILE = [".", "..", "../ev-pol/v1", "a/b", "v2\n", "v2\nFORGED", "{x}", "A" * 200, "v\u00e9", "", "a.b", 123, None]


def _wait(cond: Any, timeout: float = 10.0) -> None:
    wait_until(cond, timeout, step=0.01)


def test_hostile_versions_in_model_updated_are_refused(r: redis.Redis, redis_url: str, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    promote(store, P, "v1")
    ref2 = save_good(store, P, "v2", seed=3)
    rejected = "fusion_trader_models_rejected_total{trader=t-ev}"
    before = metrics.snapshot().get(rejected, 0.0)
    trader = Trader(TraderConfig("t-ev", P, ["BTC-15M"], PaperConfig(), block_ms=10), redis_url, store)
    trader.start()
    try:
        for v in HOSTILE:
            msg = {"v": 1, "type": "model-updated", "policy": P, "version": v, "uri": ref2.uri, "sha256": ref2.sha256}
            r.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(msg, use_bin_type=True)})
        publish_model_updated(r, P, {"version": "v2", "uri": ref2.uri, "sha256": ref2.sha256})
        _wait(lambda: trader._incoming)  # the good event after the hostile ones was handled
        trader.poll_once()
        assert trader.model is not None and trader.model.version == "v2"
    finally:
        trader.close()
    events = [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(keys.EVENTS_STREAM)]
    assert not [e for e in events if e["type"] == "model-rejected"]  # a hostile version is not re-broadcast
    parked = [f for _, f in r.xrange(keys.DEAD_LETTER_STREAM)]
    assert len(parked) == len(HOSTILE)
    assert all(f[b"stream"] == keys.EVENTS_STREAM.encode() and b"invalid version name" in f[b"reason"] for f in parked)
    assert all(b"\n" not in f[b"reason"] for f in parked)
    assert metrics.snapshot().get(rejected, 0.0) - before == len(HOSTILE)
    assert not trader.stats.rejected
