"""A trader's records through the tools: ``fusion streams ls|info|tail|read --trades`` show them decoded, and
``fusion replay --trader`` pushes the archived ``trades/{T}/...`` back into ``fusion:{T}:trades`` with their IDs."""

from __future__ import annotations

import json

import msgpack
import pytest
import redis

from archiver_svc.cli import replay_main
from archiver_svc.service import Archiver
from common import keys, streams_cli
from common.store import LocalStore
from trader_svc.paper import PaperConfig, PaperEngine
from trader_svc.recovery import Ledger

T = "t-cli"


def _records(r: redis.Redis, n_batches: int = 3) -> list[tuple[bytes, dict[bytes, bytes]]]:
    eng = PaperEngine(PaperConfig(), ["BTC-15M"])
    led = Ledger(r, T, trades_max_age_s=0)
    led.load(eng)
    for i in range(n_batches):
        led.commit(eng, [{"type": "decision", "tick": i * 10 + j, "model": "m1", "market": "BTC-15M"}
                         for j in range(10)])  # fmt: skip
    return r.xrange(keys.trades_stream(T))


def _run(capsys: pytest.CaptureFixture[str], redis_url: str, *args: str) -> list[str]:
    assert streams_cli.main(["--redis-url", redis_url, *args]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_streams_show_trade_records(r: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    want = _records(r)
    r.xadd(keys.trades_stream(T), {keys.PAYLOAD_FIELD: msgpack.packb({"v": 1, "trader": "other", "type": "fill"})})
    assert any(keys.trades_stream(T) in ln for ln in _run(capsys, redis_url, "ls"))
    info = "\n".join(_run(capsys, redis_url, "info", T))
    assert f"{keys.trades_stream(T)}: length=31" in info and "group archiver" in info
    tail = [json.loads(x) for x in _run(capsys, redis_url, "tail", T, "--trades", "-n", "3")]
    assert [x["tick"] for x in tail[:2]] == [28, 29] and tail[0]["type"] == "decision" and tail[0]["model"] == "m1"
    assert tail[0]["id"] == want[-2][0].decode() and tail[0]["time"].endswith("Z")
    assert "other" in tail[2]["error"]  # another trader's record on this stream: shown as unusable, not raised
    first, last = want[5][0].decode(), want[14][0].decode()
    got = [json.loads(x) for x in _run(capsys, redis_url, "read", T, "--trades", "--from", first, "--to", last)]
    assert [x["id"] for x in got] == [e.decode() for e, _ in want[5:15]]
    assert [x["tick"] for x in got] == list(range(5, 15))


def test_replay_trades_from_the_archive(r: redis.Redis, redis_url: str, tmp_path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    want = _records(r)
    store = LocalStore(tmp_path / "s")
    assert Archiver(r, store, consumer="a1", window_s=1, grace_s=0).run(once=True, final=True).archived == 30
    assert store.list(f"trades/{T}/")
    r.delete(keys.trades_stream(T))
    rc = replay_main(["--trader", T, "--source", str(tmp_path / "s"), "--redis-url", redis_url])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and (out["entries"], out["added"], out["duplicates"], out["problems"]) == (30, 30, 0, [])
    assert r.xrange(keys.trades_stream(T)) == want  # the same IDs and bytes
    replay_main(["--trader", T, "--source", str(tmp_path / "s"), "--redis-url", redis_url])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["added"], again["duplicates"]) == (0, 30)
    with pytest.raises(SystemExit):
        replay_main(["--trader", T, "--kind", "states", "--redis-url", redis_url])  # a trader has no states
