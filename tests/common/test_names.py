"""Issue 10, defect 4: one grammar for market, policy and trader names, enforced where names come in.

Covers the grammar itself, its argparse helpers, the key builders and stream discovery of
:mod:`common.keys` / :mod:`common.streams`, and the settings.
"""

from __future__ import annotations

import argparse
import logging
import uuid

import pytest
import redis
from pydantic import ValidationError

from common import keys, metrics
from common.log import _JsonFormatter, _KvFormatter
from common.markets import MarketSpecError, parse_market, spec_arg, spec_list_arg
from common.names import (
    GRAMMAR,
    InvalidName,
    check_name,
    is_valid_name,
    name_arg,
    name_list_arg,
    safe_for_log,
)
from common.settings import Settings
from common.streams import scan_streams

HOSTILE = [".", "..", "a/b", "a\nb", "{x}", "A" * 200, "BTC\u00e9", "", "-lead", "a b", "a:b", "a\\b", "\x00"]
GOOD = ["BTC-15M", "BTC-5M_ETH-5M", "default", "paper-1", "v1", "20261128T194400Z-abc123", "A" * 128]


@pytest.mark.parametrize("name", HOSTILE)
def test_grammar_refuses_hostile_names(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidName) as e:
        check_name(name, "policy")
    msg = str(e.value)
    assert GRAMMAR in msg and "\n" not in msg and msg.startswith("invalid policy name")


@pytest.mark.parametrize("name", GOOD)
def test_grammar_accepts_good_names(name: str) -> None:
    assert check_name(name, "market") == name


def test_non_strings_are_refused() -> None:
    for v in (None, 3, b"BTC-5M", ["BTC-5M"]):
        assert not is_valid_name(v)


def test_safe_for_log_is_one_quoted_token() -> None:
    s = safe_for_log("x\nFORGED level=CRITICAL" + "y" * 500)
    assert "\n" not in s and len(s) <= 200 and s.startswith("'x\\nFORGED")


@pytest.mark.parametrize("name", HOSTILE)
def test_argparse_types_exit_2_with_the_grammar(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    ap = argparse.ArgumentParser(prog="t")
    ap.add_argument("--policy", type=name_arg("policy"))
    ap.add_argument("--markets", type=name_list_arg("market"))
    for argv in ([f"--policy={name}"], [f"--markets=BTC-5M,{name}"] if name else ["--markets=,"]):
        with pytest.raises(SystemExit) as e:
            ap.parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert GRAMMAR in err
    assert ap.parse_args(["--policy", "p-1", "--markets", "BTC-5M, ETH-5M"]).markets == "BTC-5M, ETH-5M"


def test_name_list_refuses_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    ap = argparse.ArgumentParser(prog="t")
    ap.add_argument("--markets", type=name_list_arg("market"))
    with pytest.raises(SystemExit) as e:
        ap.parse_args(["--markets", " , "])
    assert e.value.code == 2 and GRAMMAR in capsys.readouterr().err


@pytest.mark.parametrize("name", HOSTILE)
def test_market_specs_follow_the_grammar(name: str) -> None:
    for spec in (name, f"{name}=slug:some-slug@BTCUSDT", f"{name}=cid:0xabc@BTCUSDT"):
        with pytest.raises(MarketSpecError) as e:
            parse_market(spec)
        assert GRAMMAR in str(e.value)
        with pytest.raises(argparse.ArgumentTypeError):
            spec_arg(spec)
        with pytest.raises(argparse.ArgumentTypeError):
            spec_list_arg(f"BTC-15M,{spec}" if spec else " , ")
    assert spec_list_arg("btc-15m, X=slug:s@BTCUSDT") == "btc-15m, X=slug:s@BTCUSDT"


@pytest.mark.parametrize("name", HOSTILE)
def test_key_builders_refuse_hostile_names(name: str) -> None:
    for build in (keys.states_stream, keys.labels_stream, keys.trader_status_key, keys.training_lock_key):
        with pytest.raises(InvalidName):
            build(name)
    with pytest.raises(InvalidName):
        keys.lease_key(name, 0)


@pytest.mark.parametrize("name", HOSTILE)
def test_market_of_stream_ignores_hostile_names(name: str) -> None:
    for kind in ("states", "labels"):
        s = f"fusion:{{{name}}}:{kind}"
        assert keys.market_of_stream(s) is None
        assert keys.market_of_stream(s.encode()) is None
    assert keys.market_of_stream("fusion:{BTC-5M/.}:states") is None
    assert keys.market_of_stream("fusion:{BTC-5M}:states") == ("BTC-5M", "states")


def test_scan_streams_ignores_counts_and_logs_once(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex[:8]
    bad = [f"fusion:{{BTC-5M/.{tag}}}:states", f"fusion:{{x{tag}\nFORGED level=CRITICAL}}:states", "fusion:{..}:states"]
    for s in [keys.states_stream("BTC-5M"), *bad]:
        r.xadd(s, {b"d": b"x"})

    def ignored() -> float:
        return metrics.snapshot().get("fusion_streams_ignored_total{kind=states}", 0.0)

    before = ignored()
    with caplog.at_level(logging.WARNING):
        assert scan_streams(r, "states") == [keys.states_stream("BTC-5M")]
        assert scan_streams(r, "states") == [keys.states_stream("BTC-5M")]  # second scan: not logged again
    mine = [rec for rec in caplog.records if "stream ignored" in rec.getMessage() and tag in str(rec.__dict__)]
    assert len(mine) == 2  # one line per bad stream (the '..' one may have been logged by an earlier test)
    assert ignored() - before >= 2
    for fmt in (_KvFormatter(), _JsonFormatter()):
        lines = [fmt.format(rec) for rec in mine]
        assert all("\n" not in line for line in lines)  # one line each: the newline in the name is escaped
        assert any("\\nFORGED" in line for line in lines)


@pytest.mark.parametrize("name", HOSTILE)
def test_settings_refuse_hostile_names(name: str) -> None:
    for field, value in (
        ("markets", f"BTC-15M,{name}=slug:s@BTCUSDT"),
        ("markets", ["BTC-15M", name]),
        ("trader_markets", ["BTC-15M", name]),
        ("policy", name),
        ("trader_id", name),
    ):
        with pytest.raises(ValidationError) as e:
            Settings(**{field: value})
        assert GRAMMAR in str(e.value), field


def test_settings_refuse_hostile_names_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in (
        ("FUSION_MARKETS", "BTC-15M,..=slug:s@BTCUSDT"),
        ("FUSION_TRADER_MARKETS", "BTC-15M,.."),
        ("FUSION_POLICY", "../x"),
        ("FUSION_TRADER_ID", "t\nFORGED"),
    ):
        with monkeypatch.context() as mp:
            mp.setenv(var, value)
            with pytest.raises(ValidationError) as e:
                Settings()
            assert GRAMMAR in str(e.value), var


def test_settings_accept_good_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSION_MARKETS", "btc-15m, X_1=slug:s@BTCUSDT")
    monkeypatch.setenv("FUSION_TRADER_MARKETS", "BTC-15M,X_1")
    monkeypatch.setenv("FUSION_POLICY", "BTC-15M_X_1")
    monkeypatch.setenv("FUSION_TRADER_ID", "paper-2")
    s = Settings()
    assert s.markets == ["btc-15m", "X_1=slug:s@BTCUSDT"] and s.trader_markets == ["BTC-15M", "X_1"]
    assert s.market_names == ["BTC-15M", "X_1"]  # what the trader and the scheduler build keys from
    assert (s.policy, s.trader_id) == ("BTC-15M_X_1", "paper-2")
