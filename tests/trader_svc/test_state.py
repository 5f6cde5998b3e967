"""The trader remembers: positions, cash, realised PnL, the day's loss and the kill switch survive a restart
(kept in Redis with every decision batch, rebuilt from ``fusion:{T}:trades`` when the key is gone); a position
whose window ended while the trader was down settles exactly once on restart."""

from __future__ import annotations

import msgpack
import pytest

from common import keys
from common.artefact import promote
from common.policy import BUY_UP
from common.schema import encode_state, entry_id
from common.store import LocalStore
from tests.trader_svc.helpers import T0, make_state, save_always, window_raw
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "mem-pol"
M1, M2 = "BTC-15M", "ETH-15M"
W = 10_000  # 10 s windows


def records(r, trader: str) -> list[dict]:
    out = [msgpack.unpackb(f[keys.PAYLOAD_FIELD], raw=False) for _, f in r.xrange(keys.trades_stream(trader))]
    return [x for x in out if x.get("trader") == trader]


def add(r, market: str, tick: int, w: int = W, **kw) -> None:
    raw = window_raw(tick, w, **kw)
    r.xadd(keys.states_stream(market), {keys.PAYLOAD_FIELD: encode_state(make_state(market, tick, raw))},
           id=entry_id(tick))  # fmt: skip


def new_trader(redis_url: str, store, tid: str = "t-mem", **paper) -> Trader:
    cfg = TraderConfig(tid, P, [M1, M2], PaperConfig(**{"position_usd": 40.0, "max_daily_loss_usd": 30.0, **paper}),
                       tick_ms=100, block_ms=10, status_every_s=0.05)  # fmt: skip
    t = Trader(cfg, redis_url, store)
    t.start()
    return t


@pytest.fixture()
def store(tmp_path) -> LocalStore:
    s = LocalStore(tmp_path / "store")
    save_always(s, P, "buy-up", BUY_UP)
    promote(s, P, "buy-up")
    return s


def lose_and_trip(r, t: Trader) -> None:
    """M1 opens Up at 0.5 (cost 41.4), then its bid falls to 0.05: day PnL < -30, the kill switch trips.
    M2 has no ask: nothing opens there."""
    add(r, M1, T0 + 100)
    add(r, M2, T0 + 100, up_ask=None, up_bid=None)
    assert t.poll_once() == 2
    assert t.engine.pos[M1].shares == pytest.approx(80.0)
    add(r, M1, T0 + 200, up_bid=0.05)
    assert t.poll_once() == 1
    assert t.engine.killed and t.engine.day_pnl() < -30


def test_restart_keeps_positions_day_loss_and_kill_switch(r, redis_url, store) -> None:
    t = new_trader(redis_url, store)
    lose_and_trip(r, t)
    before = t.engine.snapshot()
    t.close()  # the state was written with the batch; nothing is saved "at stop"
    t2 = new_trader(redis_url, store)
    try:
        after = t2.engine.snapshot()
        for k in ("positions", "kill_switch", "day_pnl_usd", "realised_usd", "equity_usd", "fills", "fees"):
            assert after[k] == before[k], k
        # M2 gets a book now: the open is refused, the kill switch held across the restart
        add(r, M2, T0 + 300)
        add(r, M1, T0 + 300, up_bid=0.05)
        assert t2.poll_once() == 2
        recs = records(r, "t-mem")
        assert not [x for x in recs if x["type"] == "fill" and x["market"] == M2]
        (rf,) = [x for x in recs if x["type"] == "refused" and x["market"] == M2 and x["tick"] == T0 + 300]
        assert "kill switch" in rf["reason"]
        assert t2.status()["state_source"] == "redis"
    finally:
        t2.close()


def test_state_rebuilt_from_the_trade_stream_when_the_key_is_gone(r, redis_url, store) -> None:
    t = new_trader(redis_url, store)
    lose_and_trip(r, t)
    add(r, M1, T0 + 300, up_bid=0.5)  # the mark recovers a bit, still killed for the day
    assert t.poll_once() == 1
    before = t.engine.snapshot()
    t.close()
    assert r.delete(keys.trader_state_key("t-mem")) == 1
    t2 = new_trader(redis_url, store)
    try:
        assert t2.status()["state_source"] == "trades"
        add(r, M1, T0 + 400, up_bid=0.5)  # one state re-marks the position
        assert t2.poll_once() == 1
        after = t2.engine.snapshot()
        for k in ("kill_switch", "realised_usd", "fills", "fees", "kill_trips"):
            assert after[k] == before[k], k
        assert after["day_pnl_usd"] == pytest.approx(before["day_pnl_usd"], abs=1e-9)
        (pos,) = after["positions"].values()
        (was,) = before["positions"].values()
        assert pos["shares"] == was["shares"] and pos["cost"] == was["cost"] and pos["window_end_s"] == was[
            "window_end_s"]  # fmt: skip
    finally:
        t2.close()


def test_position_whose_window_ended_while_down_settles_once_on_restart(r, redis_url, store) -> None:
    t = new_trader(redis_url, store, max_daily_loss_usd=500.0)
    add(r, M1, T0 + 100)
    assert t.poll_once() == 1 and M1 in t.engine.pos
    cost = t.engine.pos[M1].cost
    t.close()
    # while the trader is down: window 0 ends, window 1 says Up won, window 2 no longer knows about window 0
    for tick in range(T0 + W, T0 + 2 * W, 1000):
        add(r, M1, tick, prev_settle=1.0)
    for tick in range(T0 + 2 * W, T0 + 3 * W, 1000):
        add(r, M1, tick, prev_settle=0.0)  # the resolution of window 1, not of the position's window
    t2 = new_trader(redis_url, store, max_daily_loss_usd=500.0)
    try:
        assert M1 not in t2.engine.pos
        (st,) = [x for x in records(r, "t-mem") if x["type"] == "fill" and x["kind"] == "settle"]
        assert st["settle_up"] == 1.0 and st["fill_tick"] == T0 + W and st["recovered"] is True
        assert st["realised"] == pytest.approx(80.0 - cost)
        assert t2.engine.totals.realised == pytest.approx(80.0 - cost)
    finally:
        t2.close()
    t3 = new_trader(redis_url, store, max_daily_loss_usd=500.0)  # a second restart settles nothing again
    try:
        assert len([x for x in records(r, "t-mem") if x["type"] == "fill" and x["kind"] == "settle"]) == 1
        assert t3.engine.totals.realised == pytest.approx(80.0 - cost) and not t3.engine.pos
    finally:
        t3.close()


def test_running_trader_settles_from_states_it_skipped(r, redis_url, store) -> None:
    """The resolution was only in states the trader jumped over (backlog longer than one read): the periodic
    lookup in the recorded states settles the position, once."""
    cfg = TraderConfig("t-skip", P, [M1], PaperConfig(position_usd=40.0), tick_ms=100, block_ms=10, read_count=4,
                       settle_check_s=0.0, settle_grace_s=0.0)  # fmt: skip
    t = Trader(cfg, redis_url, store)
    t.start()
    try:
        add(r, M1, T0 + 100)
        assert t.poll_once() == 1 and M1 in t.engine.pos
        for tick in range(T0 + W, T0 + 2 * W, 1000):
            add(r, M1, tick, prev_settle=0.0)
        for tick in range(T0 + 2 * W, T0 + 3 * W, 1000):
            add(r, M1, tick)
        t.poll_once()  # the periodic lookup settles; then it jumps to the newest state (window 2) and reopens
        t.poll_once()
        (st,) = [x for x in records(r, "t-skip") if x["type"] == "fill" and x["kind"] == "settle"]
        assert st["settle_up"] == 0.0 and st["fill_tick"] == T0 + W and st["recovered"] is True
        assert t.engine.pos[M1].opened_tick == T0 + 3 * W - 1000  # a new position, in window 2
        t.poll_once()
        assert len([x for x in records(r, "t-skip") if x["type"] == "fill" and x["kind"] == "settle"]) == 1
    finally:
        t.close()


def test_resolution_trimmed_from_the_stream_is_found_in_the_archive(r, redis_url, store) -> None:
    from archiver_svc.windows import encode_object, object_key

    t = new_trader(redis_url, store, max_daily_loss_usd=500.0)
    add(r, M1, T0 + 100)
    assert t.poll_once() == 1 and M1 in t.engine.pos
    cost = t.engine.pos[M1].cost
    t.close()
    for tick in range(T0 + W, T0 + 2 * W, 1000):
        add(r, M1, tick, prev_settle=0.0)
    for tick in range(T0 + 2 * W, T0 + 3 * W, 1000):
        add(r, M1, tick)
    stream = keys.states_stream(M1)
    entries = {eid.decode(): f[keys.PAYLOAD_FIELD] for eid, f in r.xrange(stream)}
    store.put(object_key("states", M1, T0), encode_object("states", M1, T0, 600_000, entries))  # the archiver's
    assert r.xtrim(stream, minid=f"{T0 + 2 * W}-0", approximate=False) == 11  # windows 0 and 1 left the stream
    t2 = new_trader(redis_url, store, max_daily_loss_usd=500.0)
    try:
        (st,) = [x for x in records(r, "t-mem") if x["type"] == "fill" and x["kind"] == "settle"]
        assert st["source"] == "archive" and st["fill_tick"] == T0 + W and st["settle_up"] == 0.0
        assert st["realised"] == pytest.approx(-cost) and M1 not in t2.engine.pos
    finally:
        t2.close()


def test_unreadable_state_key_is_parked_and_rebuilt_from_the_trade_stream(r, redis_url, store) -> None:
    t = new_trader(redis_url, store)
    lose_and_trip(r, t)
    t.close()
    r.hset(keys.trader_state_key("t-mem"), "d", b"\x93\x01garbage")
    t2 = new_trader(redis_url, store)
    try:
        assert t2.status()["state_source"] == "trades" and t2.engine.killed and M1 in t2.engine.pos
        (dl,) = r.xrange(keys.DEAD_LETTER_STREAM)
        assert dl[1][b"stream"] == keys.trader_state_key("t-mem").encode() and dl[1][b"service"] == b"trader"
        assert dl[1][b"payload"] == b"\x93\x01garbage"
    finally:
        t2.close()


def test_state_key_shares_the_trade_streams_slot_and_legacy_state_is_moved(r, redis_url, tmp_path) -> None:
    """The state and the records are written in one MULTI: in a Redis Cluster both keys must hash to one slot.
    A state stored under the untagged key of older versions is picked up (and moved) on start."""
    from common.keys import legacy_trader_state_key, trader_state_key, trades_stream

    def slot_tag(k: str) -> str:
        return k[k.index("{") + 1 : k.index("}")]

    assert slot_tag(trader_state_key("t-mem")) == slot_tag(trades_stream("t-mem")) == "t-mem"
    store = LocalStore(tmp_path / "store")
    save_always(store, P, "buy-up", BUY_UP)
    promote(store, P, "buy-up")
    t = new_trader(redis_url, store)
    try:
        add(r, M1, T0)
        assert t.poll_once() == 1 and t.engine.pos
    finally:
        t.stop()
    r.rename(trader_state_key("t-mem"), legacy_trader_state_key("t-mem"))  # as an older version left it
    again = new_trader(redis_url, store)
    try:
        assert again.state_source == "redis" and set(again.engine.pos) == {M1}
        assert r.exists(trader_state_key("t-mem")) and not r.exists(legacy_trader_state_key("t-mem"))
    finally:
        again.stop()
