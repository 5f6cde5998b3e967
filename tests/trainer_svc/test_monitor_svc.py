"""``fusion monitor``'s IO against a real Redis and a store: archived windows + a trader's records -> verdicts with
the backtest beside the live PnL; a restart judges no window twice; a trip is stored before it is acted on, so a
crash in between rolls back once, not twice; hostile records are skipped."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import redis

from benchmarks.monitor import churn_weights, good_weights
from common import artefact, keys
from common.policy import architecture, meta_features
from common.schema import TRADE_VERSION
from common.store import LocalStore
from tests.trainer_svc.test_backtest import archive
from trainer_svc.algos import TrainConfig
from trainer_svc.monitor import MonitorConfig
from trainer_svc.monitor_svc import MonitorService, comparison

P, T, M = "mon-pol", "mon-t", "MO-15M"
WIN = 900_000


@pytest.fixture()
def setup(tmp_path, r: redis.Redis) -> tuple[LocalStore, list[int]]:
    store = LocalStore(tmp_path / "store")
    archive(store, M, 6 * 1800, seed=11)  # 6 windows of 15 min; the last one unsettled
    meta = {**meta_features(), "architecture": architecture(), "hyper_parameters": TrainConfig().to_dict(),
            "holdout_window_pnl": [0.4, 0.6, 0.5, 0.3, 0.7, 0.5]}  # fmt: skip
    artefact.save_model(store, P, good_weights(), meta, version="good")
    artefact.save_model(store, P, churn_weights(), meta, version="bad")  # claims the good one's hold-out
    artefact.promote(store, P, "good")
    artefact.promote(store, P, "bad")
    from archiver_svc.reader import load_market

    ticks = load_market(store, M, labels=False).states.tick_ms
    starts = sorted({int(t) // WIN * WIN for t in ticks})
    recs: list[dict] = []
    for t in ticks[::20].tolist():  # the trader decided every 10 s with "bad"
        recs.append({"type": "decision", "market": M, "tick": t, "model": "bad", "a": 1})
    for s in starts:  # one position per window (opened once the previous one settled): -50 USD of 100 (-0.5 stake)
        recs.append({"type": "fill", "market": M, "kind": "open", "tick": s + 30_000, "model": "bad", "want": 100.0,
                     "fee": 1.0, "window_end_s": (s + WIN) / 1000})  # fmt: skip
        recs.append({"type": "fill", "market": M, "kind": "settle", "tick": s + WIN + 20_000, "model": "bad",
                     "realised": -50.0, "fee": 0.0})  # fmt: skip
    recs.sort(key=lambda x: x["tick"])
    for rec in recs:
        r.xadd(keys.trades_stream(T), {b"d": msgpack.packb({"v": TRADE_VERSION, "trader": T, **rec})})
    r.xadd(keys.trades_stream(T), {b"d": b"\xc1 not msgpack"})  # a hostile record: skipped
    return store, starts


def _events(r: redis.Redis) -> list[dict]:
    return [msgpack.unpackb(f[b"d"], raw=False) for _, f in r.xrange(keys.EVENTS_STREAM)]


def test_windows_judged_once_with_live_and_backtest_across_a_restart(setup, r: redis.Redis) -> None:
    store, starts = setup
    mon = MonitorService(r, store, P, T, MonitorConfig(k=10), rollback=True)
    verdicts = mon.step()
    assert [v.window.start_ms for v in verdicts] == starts[:5]  # the 6th is not settled in the archive
    assert all(v.window.live == pytest.approx(-0.5) for v in verdicts)
    bt = [v.window.backtest for v in verdicts]
    assert all(b is not None and b < -1.0 for b in bt)  # churning every tick in the replay loses more
    assert verdicts[-1].consecutive_holdout == 5 and not any(v.trip for v in verdicts)  # k=10: not yet
    again = MonitorService(r, store, P, T, MonitorConfig(k=10), rollback=True)  # a restart
    assert again.step() == [] and again.machine.windows_checked == 5
    cmp = comparison(r, P, T)
    assert cmp["version"] == "bad" and len(cmp["windows"]) == 5 and cmp["live_total"] == pytest.approx(-2.5)
    assert cmp["backtest_total"] == pytest.approx(sum(bt)) and cmp["holdout"]["kind"] == "windows"
    assert comparison(r, P, "nobody") == {}


class Crash(Exception):
    pass


def test_trip_is_stored_before_acting_and_rolls_back_once(setup, r: redis.Redis) -> None:
    store, _ = setup

    class CrashingMonitor(MonitorService):
        def _act(self, p):  # the process dies after storing the trip, before the rollback
            raise Crash()

    mon = CrashingMonitor(r, store, P, T, MonitorConfig(k=3), rollback=True)
    with pytest.raises(Crash):
        mon.step()
    assert artefact.champion(store, P)["version"] == "bad" and not _events(r)
    restarted = MonitorService(r, store, P, T, MonitorConfig(k=3), rollback=True)
    assert restarted.pending is not None and restarted.pending["version"] == "bad"
    restarted.step()
    assert artefact.champion(store, P)["version"] == "good"
    ev = [e for e in _events(r) if e["type"] == "model-rolled-back"]
    assert len(ev) == 1 and ev[0]["version"] == "good" and ev[0]["previous"] == "bad"
    assert "below the hold-out bound" in ev[0]["reason"] and ev[0]["reason"].startswith("monitor: ")
    for _ in range(2):  # further cycles, and another restart: no second rollback
        MonitorService(r, store, P, T, MonitorConfig(k=3), rollback=True).step()
    assert len([e for e in _events(r) if e["type"] == "model-rolled-back"]) == 1
    assert artefact.champion(store, P)["version"] == "good"
    summary = comparison(r, P, T)
    assert summary["version"] == "good" and summary["action"]["action"] == "rolled back to good"


def test_alert_only_without_rollback(setup, r: redis.Redis) -> None:
    store, _ = setup
    mon = MonitorService(r, store, P, T, MonitorConfig(k=3), rollback=False)
    trips = [v for v in mon.step() if v.trip]
    assert len(trips) == 1 and artefact.champion(store, P)["version"] == "bad"
    assert mon.last["action"]["action"] == "alerted" and not _events(r)
    assert np.isfinite(trips[0].live_mean)
