"""The trader on a live Redis stream: hot swaps at tick boundaries with zero missed ticks, a bad model
rejected with its reason, restart from the champion, missed-tick counting, feature checks, outputs."""

from __future__ import annotations

import json
import threading
import time

import msgpack
import numpy as np
import pytest

from common import keys
from common.artefact import promote, publish_model_updated
from common.policy import init_weights
from common.schema import encode_state, entry_id
from common.store import LocalStore
from common.streams import publish_states
from tests.trader_svc.helpers import T0, encoded, make_state, save_good, save_raw, synth_raw
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "swap-pol"
MARKETS = ["BTC-15M", "ETH-15M", "SOL-15M"]


def read_stream(r, key: str) -> list[dict]:
    return [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(key)]


def wait_for(cond, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def config(tid: str, **kw) -> TraderConfig:
    base = dict(tick_ms=100, block_ms=50, status_every_s=0.2, metrics_every_s=0.5)
    return TraderConfig(tid, P, list(MARKETS), PaperConfig(position_usd=10.0), **{**base, **kw})


def publisher(redis_url: str, n: int, period_s: float, published: list[int], stop: threading.Event) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(7)
    for i in range(n):
        if stop.is_set():
            break
        tick = T0 + 100 * i
        res = publish_states(r, [(keys.states_stream(m), entry_id(tick), encoded(m, tick, rng)) for m in MARKETS])
        assert res.added == len(MARKETS)
        published.append(tick)
        time.sleep(period_s)
    r.close()


def test_three_model_updates_one_bad_zero_missed_ticks_swaps_at_tick_boundaries(r, redis_url, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    for i, v in enumerate(("v1", "v2", "v3"), start=1):
        save_good(store, P, v, seed=i)
    promote(store, P, "v1")  # the champion before the trader starts (no event)
    bad = init_weights(9)
    bad["actor.fc2.weight"][0, 0] = np.nan
    bad_ptr = save_raw(store, P, "v-bad", bad)

    trader = Trader(config("t-swap"), redis_url, store)
    runner = threading.Thread(target=trader.run, daemon=True)
    runner.start()
    assert trader.ready.wait(10) and trader.model.version == "v1"

    published: list[int] = []
    stop_pub = threading.Event()
    pub = threading.Thread(target=publisher, args=(redis_url, 60, 0.07, published, stop_pub), daemon=True)
    pub.start()
    try:
        wait_for(lambda: len(published) >= 12, what="first ticks")
        promote(store, P, "v2", redis=r)  # model-updated #1 (good)
        wait_for(lambda: trader.model.version == "v2", what="swap to v2")
        wait_for(lambda: len(published) >= 24, what="ticks")
        publish_model_updated(r, P, bad_ptr)  # model-updated #2 (NaN weights)
        wait_for(lambda: trader.stats.rejected, what="rejection")
        wait_for(lambda: len(published) >= 36, what="ticks")
        promote(store, P, "v3", redis=r)  # model-updated #3 (good)
        wait_for(lambda: trader.model.version == "v3", what="swap to v3")
        pub.join(20)
        assert not pub.is_alive() and len(published) == 60
        wait_for(lambda: all(trader.stats.last_tick.get(m) == published[-1] for m in MARKETS), what="last tick")
    finally:
        stop_pub.set()
        trader.stop()
        runner.join(10)

    # zero missed ticks: every published tick of every market has exactly one decision
    recs = read_stream(r, keys.trades_stream("t-swap"))
    dec = [x for x in recs if x["type"] == "decision"]
    for m in MARKETS:
        assert sorted(x["tick"] for x in dec if x["market"] == m) == published
    assert sum(trader.stats.missed.values()) == 0 and trader.stats.feature_mismatches == 0

    # versions: one per tick, changing only between ticks, in order v1 -> v2 -> v3, never the bad one
    by_tick: dict[int, set[str]] = {}
    for x in dec:
        by_tick.setdefault(x["tick"], set()).add(x["model"])
    assert all(len(v) == 1 for v in by_tick.values())
    seq = [next(iter(by_tick[t])) for t in published]
    changes = [seq[0]] + [b for a, b in zip(seq, seq[1:], strict=False) if a != b]
    assert changes == ["v1", "v2", "v3"]
    swaps = [x for x in recs if x["type"] == "swap"]
    assert [(s["from"], s["to"]) for s in swaps] == [("v1", "v2"), ("v2", "v3")]
    for s in swaps:  # the swap happened between two ticks: up to after_tick the old model, then the new
        assert s["tick"] is None or s["tick"] > s["after_tick"]
        before = [t for t in published if t <= s["after_tick"]]
        after = [t for t in published if t > s["after_tick"]]
        assert before and after  # happened while the stream was live
        assert next(iter(by_tick[before[-1]])) == s["from"] and next(iter(by_tick[after[0]])) == s["to"]

    # the bad one: rejected with its reason, announced on fusion:events
    events = read_stream(r, keys.EVENTS_STREAM)
    rej = [e for e in events if e["type"] == "model-rejected"]
    assert len(rej) == 1 and rej[0]["version"] == "v-bad" and rej[0]["trader"] == "t-swap"
    assert rej[0]["reason"].startswith("non-finite") and "actor.fc2.weight" in rej[0]["reason"]
    assert rej[0]["policy"] == P and isinstance(rej[0]["ts"], int)

    # status in Redis, metrics files in the store
    st = json.loads(r.get(keys.trader_status_key("t-swap")))
    assert st["model"] == "v3" and st["swaps"] == 2 and st["rejected"] == 1 and st["missed_ticks"] == 0
    assert st["decisions"] == 60 * len(MARKETS) and st["running"] is False
    files = [i.key for i in store.list("live-metrics/t-swap/")]
    assert files and all(k.endswith(".json") for k in files)
    last = json.loads(store.get(files[-1]))
    assert last["model"] == "v3" and "pnl" in last

    # restart: starts from the current champion
    again = Trader(config("t-swap"), redis_url, store)
    again.start()
    try:
        assert again.model.version == "v3"
    finally:
        again.close()


def test_newest_state_only_missed_ticks_dead_letters_feature_mismatch(r, redis_url, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    promote(store, P, "v1")
    m = MARKETS[0]
    trader = Trader(TraderConfig("t-miss", P, [m], PaperConfig(), tick_ms=100, block_ms=10), redis_url, store)
    rng = np.random.default_rng(1)
    trader.start()
    try:
        stream = keys.states_stream(m)
        r.xadd(stream, {keys.PAYLOAD_FIELD: encoded(m, T0, rng)}, id=entry_id(T0))
        assert trader.poll_once() == 1 and trader.stats.last_tick[m] == T0
        for i in range(1, 6):  # five ticks arrive while the trader is busy: it decides on the newest only
            t = T0 + 100 * i
            r.xadd(stream, {keys.PAYLOAD_FIELD: encoded(m, t, rng)}, id=entry_id(t))
        assert trader.poll_once() == 1
        assert trader.stats.last_tick[m] == T0 + 500 and trader.stats.missed[m] == 4
        # a state whose features differ from the recomputed ones is still decided (on recomputed features)
        t = T0 + 600
        s = make_state(m, t, synth_raw(rng, t))
        s.features = np.clip(s.features + np.float32(0.5), -1, 1)  # in the feature range, but not the recomputed
        r.xadd(stream, {keys.PAYLOAD_FIELD: encode_state(s)}, id=entry_id(t))
        assert trader.poll_once() == 1 and trader.stats.feature_mismatches == 1
        # garbage is parked with its reason and never stops the trader
        r.xadd(stream, {keys.PAYLOAD_FIELD: b"\xc1garbage"}, id=entry_id(T0 + 700))
        assert trader.poll_once() == 0 and trader.stats.dead == 1
        (dl,) = r.xrange(keys.DEAD_LETTER_STREAM)
        assert b"msgpack" in dl[1][b"reason"]
        r.xadd(stream, {keys.PAYLOAD_FIELD: encoded(m, T0 + 800, rng)}, id=entry_id(T0 + 800))
        assert trader.poll_once() == 1 and trader.stats.last_tick[m] == T0 + 800
    finally:
        trader.close()


def test_no_champion_holds_until_a_model_arrives_and_cli_status(r, redis_url, tmp_path, capsys, monkeypatch) -> None:
    store = LocalStore(tmp_path / "store")
    m = MARKETS[0]
    trader = Trader(TraderConfig("t-cli", P, [m], PaperConfig(), block_ms=10, status_every_s=0.05), redis_url, store)
    trader.start()
    try:
        assert trader.model is None
        rng = np.random.default_rng(2)
        r.xadd(keys.states_stream(m), {keys.PAYLOAD_FIELD: encoded(m, T0, rng)}, id=entry_id(T0))
        assert trader.poll_once() == 1
        (d,) = [x for x in read_stream(r, keys.trades_stream("t-cli")) if x["type"] == "decision"]
        assert d["action"] == "hold" and d["model"] == ""
        save_good(store, P, "v1")
        promote(store, P, "v1", redis=r)
        wait_for(lambda: trader._incoming, what="load")
        trader.poll_once()  # idle read: a tick boundary, the model is adopted
        assert trader.model.version == "v1"
        wait_for(
            lambda: (
                r.get(keys.trader_status_key("t-cli"))
                and json.loads(r.get(keys.trader_status_key("t-cli")))["model"] == "v1"
            ),
            what="status",
        )
    finally:
        trader.close()
    from trader_svc.cli import trader_main

    monkeypatch.setenv("FUSION_REDIS_URL", redis_url)
    assert trader_main(["status", "--trader", "t-cli"]) == 0
    out = capsys.readouterr().out
    assert "trader t-cli" in out and "model v1" in out
    assert trader_main(["status", "--trader", "nobody"]) == 1


@pytest.mark.parametrize("bad", ["sha", "order"])
def test_bad_update_keeps_the_old_model(r, redis_url, tmp_path, bad) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    promote(store, P, "v1")
    trader = Trader(TraderConfig("t-bad", P, [MARKETS[0]], PaperConfig(), block_ms=10), redis_url, store)
    trader.start()
    try:
        if bad == "sha":
            ref = save_good(store, P, "v2", seed=5)
            publish_model_updated(r, P, {"version": "v2", "uri": ref.uri, "sha256": "ab" * 32})
        else:
            from tests.trader_svc.helpers import good_meta

            meta = good_meta()
            meta["features"] = list(reversed(meta["features"]))
            publish_model_updated(r, P, save_raw(store, P, "v2", init_weights(5), meta=meta))
        wait_for(lambda: trader.stats.rejected, what="rejection")
        trader.poll_once()
        assert trader.model.version == "v1" and not trader._incoming
        rej = [e for e in read_stream(r, keys.EVENTS_STREAM) if e["type"] == "model-rejected"]
        assert rej[0]["reason"].startswith("sha256" if bad == "sha" else "features")
    finally:
        trader.close()
