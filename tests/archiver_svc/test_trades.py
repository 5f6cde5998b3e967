"""A trader's records: validated, archived per window like states and labels, read back with the reader; the
trade stream is trimmed by age but never below what the archiver has not acknowledged."""

from __future__ import annotations

import json
import time

import msgpack

from archiver_svc.service import Archiver
from archiver_svc.trades import load_trades
from common import keys
from common.store import LocalStore
from common.validate import check_payloads
from trader_svc.paper import PaperConfig, PaperEngine
from trader_svc.recovery import Ledger

T = "t-rec"


def _rec(i: int, trader: str = T) -> bytes:
    return msgpack.packb({"v": 1, "trader": trader, "type": "decision", "tick": i, "model": "m1"})


def test_check_payloads_trades() -> None:
    ids = ["1-0", "1-1", "2-0", "3-0", "4-0", "5-0"]
    payloads = [_rec(1), _rec(2, "other"), msgpack.packb([1, 2]), b"\xc1", msgpack.packb({"v": 1, "trader": T}),
                msgpack.packb({"v": 9, "trader": T, "type": "fill"})]  # fmt: skip
    bad = dict(check_payloads(T, "trades", ids, payloads))
    assert sorted(bad) == [1, 2, 3, 4, 5]
    assert "other" in bad[1] and "not a map" in bad[2] and "undecodable" in bad[3] and "type" in bad[4]
    assert "version" in bad[5]


def test_trades_archived_once_and_trim_waits_for_the_archiver(r, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    eng = PaperEngine(PaperConfig(), ["BTC-15M"])
    led = Ledger(r, T, trades_max_age_s=0)
    led.load(eng)  # creates the stream with the archiver's group at 0
    for i in range(6):
        led.commit(eng, [{"type": "decision", "tick": i * 100 + j, "model": "m1"} for j in range(100)])
    stream = keys.trades_stream(T)
    r.xadd(stream, {keys.PAYLOAD_FIELD: _rec(7, "someone-else")})  # forged: parked, never archived
    assert r.xlen(stream) == 601
    led.trim(int(time.time() * 1000) + 10_000)
    assert r.xlen(stream) == 601  # nothing archived yet: nothing trimmed, whatever the age setting
    stats = Archiver(r, store, consumer="a1", window_s=1, grace_s=0).run(once=True, final=True)
    assert stats.archived == 600 and stats.dead == 1
    got = load_trades(store, T)
    want = r.xrange(stream)
    assert got.problems == [] and len(got.ids) == 600
    assert got.ids == [e.decode() for e, _ in want][:600]
    assert [x["tick"] for x in got.records] == [i * 100 + j for i in range(6) for j in range(100)]
    assert all(k.key.startswith(f"trades/{T}/") for k in store.list("trades/"))
    dead = [f for _, f in r.xrange(keys.DEAD_LETTER_STREAM) if stream.encode() in f.values()]
    assert len(dead) == 1 and b"someone-else" in b"".join(dead[0].values())
    led.trim(int(time.time() * 1000) + 10_000)
    assert r.xlen(stream) < 601  # archived: now the age setting applies (approximate trim, whole nodes)
    # a second run changes nothing: objects are deterministic, entries were acked
    again = Archiver(r, store, consumer="a2", window_s=1, grace_s=0).run(once=True, final=True)
    assert again.archived == 0 and load_trades(store, T).ids == got.ids


def test_daily_summary_written_when_the_day_closes_and_idempotent(r, tmp_path) -> None:
    from archiver_svc.summary import summary_key, write_summary

    store = LocalStore(tmp_path / "s")
    stream = keys.trades_stream(T)
    d1 = 1_767_225_600_000  # 2026-01-01T00:00Z
    ensure = Ledger(r, T, trades_max_age_s=0)
    ensure.load(PaperEngine(PaperConfig(), ["BTC-15M"]))

    def add(ms: int, **rec) -> None:
        body = {"v": 1, "trader": T, **rec}
        r.xadd(stream, {keys.PAYLOAD_FIELD: msgpack.packb(body)}, id=f"{ms}-*")

    add(d1 + 1000, type="fill", kind="open", market="M", model="m1", cash=-30.0, realised=0.0, fee=1.0)
    add(d1 + 5000, type="fill", kind="settle", market="M", model="m1", cash=60.0, realised=30.0, fee=0.0)
    add(d1 + 86_400_000 + 1000, type="decision", model="m2", market="M")  # the next day
    Archiver(r, store, consumer="a1", window_s=1, grace_s=0).run(once=True)
    day1 = json.loads(store.get(summary_key(T, "2026-01-01")))
    assert day1["models"]["m1"]["pnl_usd"] == 30.0 and day1["models"]["m1"]["win_rate"] == 1.0
    assert day1["total"]["fees_usd"] == 1.0 and day1["records"] == 2
    assert not store.exists(summary_key(T, "2026-01-02"))  # the day is still open
    Archiver(r, store, consumer="a1", window_s=1, grace_s=0).run(once=True, final=True)
    day2 = json.loads(store.get(summary_key(T, "2026-01-02")))
    assert day2["models"]["m2"]["decisions"] == 1
    assert write_summary(store, T, "2026-01-01") is False  # recomputed: same bytes, not rewritten
