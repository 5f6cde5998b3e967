"""What the demo shows of the closed loop, on real Redis and a real archive: the trade record exactly once
against the trade stream (a parked record is not a loss; a record missing from the archive is), the daily
summary beside it, and the alerts recorded by the local receiver."""

from __future__ import annotations

import io
from pathlib import Path

import msgpack
import redis
from rich.console import Console

from archiver_svc.service import Archiver
from common import keys
from common.alerts import AlertSink
from common.store import LocalStore
from fusion.alert_receiver import AlertReceiver
from fusion.demo.loop import sent_alerts, trade_record
from fusion.demo.report import alert_lines, record_lines
from trader_svc.paper import PaperConfig, PaperEngine
from trader_svc.recovery import Ledger

T = "demo-trader"


def _text(lines: list) -> str:
    buf = io.StringIO()
    c = Console(file=buf, width=200)
    for ln in lines:
        c.print(ln)
    return " ".join(buf.getvalue().split())


def test_trade_record_exactly_once_with_its_summary(r: redis.Redis, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    eng = PaperEngine(PaperConfig(), ["BTC-15M"])
    led = Ledger(r, T, trades_max_age_s=0)
    led.load(eng)
    for i in range(3):
        led.commit(eng, [{"type": "decision", "tick": i * 10 + j, "model": "v1"} for j in range(10)])
    stream = keys.trades_stream(T)
    r.xadd(stream, {keys.PAYLOAD_FIELD: msgpack.packb({"v": 1, "trader": "someone-else", "type": "fill"})})
    stats = Archiver(r, store, consumer="a1", window_s=1, grace_s=0).run(once=True, final=True)
    assert stats.archived == 30 and stats.dead == 1
    rec = trade_record(r, store, T)
    assert rec["in_stream"] == 31 and rec["archived"] == 30 and rec["parked"] == 1, rec
    assert rec["exactly_once"] and rec["duplicates"] == 0 and rec["not_archived"] == 0
    assert rec["by_type"] == {"decision": 30}
    (day,) = rec["summaries"]
    assert rec["summaries"][day]["models"]["v1"]["decisions"] == 30
    text = _text(record_lines({"trade_record": rec}))
    assert "30 records archived of 31 in the stream (exactly once): 30 decision" in text, text
    # an entry the archiver never saw (here: added after the run) is NOT exactly once
    led.commit(eng, [{"type": "decision", "tick": 99, "model": "v1"}])
    rec2 = trade_record(r, store, T)
    assert not rec2["exactly_once"] and rec2["not_archived"] == 1
    assert "NOT exactly once" in _text(record_lines({"trade_record": rec2}))


def test_alerts_the_receiver_got_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    rc = AlertReceiver(path).start()
    sink = AlertSink(rc.url, service="trainer")
    try:
        assert sink.send("promotion", "demo v1 promoted", key="demo")
        assert sink.send("data-gap", "BTC-5M stale for 301 s", key="BTC-5M", gap_s=301)
        assert sink.flush(10)
    finally:
        sink.close()
        rc.close()
    got = sent_alerts(path)
    assert [(a["kind"], a["key"]) for a in got] == [("promotion", "demo"), ("data-gap", "BTC-5M")]
    assert got[1]["fields"]["gap_s"] == 301
    text = _text(alert_lines({"alerts": got}))
    assert "alerts sent to the local webhook (2)" in text and "[trainer] data-gap BTC-5M: BTC-5M stale" in text
    assert "none" in _text(alert_lines({"alerts": []}))


def test_live_vs_backtest_is_a_table_with_the_verdict() -> None:
    from fusion.demo.report import monitor_lines

    w = {"market": "BTC-5M", "start_ms": 1_763_856_000_000, "end_ms": 1_763_856_300_000, "trades": 4, "live": 0.31,
         "backtest": 0.42, "live_mean": 0.31, "bound": -1.25, "gap_mean": -0.11}  # fmt: skip
    c = {"version": "v9", "windows": [w, {**w, "backtest": None, "bound": None}], "live_total": 0.62,
         "backtest_total": 0.42, "gap_per_window": 0.1, "tripped": None}  # fmt: skip
    text = _text(monitor_lines({"live_vs_backtest": c}))
    assert "live vs backtest of v9" in text and "BTC-5M" in text and "+0.3100" in text and "+0.4200" in text
    assert "-1.2500" in text and "kept" in text, text
    tripped = _text(monitor_lines({"live_vs_backtest": {**c, "tripped": "live below bound", "action": "alerted"}}))
    assert "tripped: live below bound (alerted)" in tripped
    assert "no window judged yet" in _text(monitor_lines({"live_vs_backtest": {**c, "windows": []}}))
    assert "not available (KeyError" in _text(monitor_lines({"live_vs_backtest": {"error": "KeyError: x"}}))
    assert monitor_lines({}) == []
