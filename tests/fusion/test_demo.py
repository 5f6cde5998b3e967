"""The demo tells the truth: data quality counted from the states, a verdict in words, the trading
phase named after what was promoted, defaults in every --help, and what the demo made reusable."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import redis

from common import keys
from common.features import FEATURE_SET, N_MARKET_FEATURES
from common.redisproc import RedisServer
from common.schema import N_RAW, NO_PM_MARKET, STALE_POLY, State, encode_state
from common.store import LocalStore
from fusion.demo.quality import StreamQuality, discovery_errors, from_columns
from fusion.demo.report import verdict
from fusion.demo.run import _trading_phase, write_settings
from fusion.demo.stages import Demo

ROOT = Path(__file__).resolve().parents[2]


def _state(m: str, tick: int, flags: int) -> bytes:
    raw = np.zeros(N_RAW)
    return encode_state(State(m, tick, raw, np.zeros(N_MARKET_FEATURES, np.float32), FEATURE_SET, flags, None))


def _publish(r: redis.Redis, m: str, ticks: list[int], flags: list[int]) -> None:
    for t, f in zip(ticks, flags, strict=True):
        r.xadd(keys.states_stream(m), {keys.PAYLOAD_FIELD: _state(m, t, f)}, id=f"{t}-0")


def test_stream_quality_counts_flags_and_missing_ticks_incrementally(r: redis.Redis) -> None:
    t0 = 1_700_000_000_000
    ticks = [t0 + 500 * k for k in range(100) if not 40 <= k < 45]  # 5 ticks missing
    flags = [NO_PM_MARKET if k < 10 else (STALE_POLY if k == 50 else 0) for k in range(len(ticks))]
    q = StreamQuality(["BTC-5M"], step_ms=500, batch=16)
    _publish(r, "BTC-5M", ticks[:60], flags[:60])
    q.update(r)
    _publish(r, "BTC-5M", ticks[60:], flags[60:])
    q.update(r)
    q.update(r)  # nothing new: nothing counted twice
    got = q.q["BTC-5M"]
    assert (got.states, got.no_market, got.stale_poly, got.gaps) == (95, 10, 1, 5)
    warnings = got.warnings("BTC-5M")
    assert any("11% of 95 states had no Polymarket market" in w for w in warnings), warnings
    assert any("5 ticks missing" in w for w in warnings) and not any("stale Polymarket" in w for w in warnings)


def test_archive_quality_matches_and_metrics_scrape_sums_observers() -> None:
    from common.schema import decode_states_columns_fast

    t0 = 1_700_000_000_000
    cols, _ = decode_states_columns_fast([_state("ETH-5M", t0 + 500 * k, 0 if k % 4 else NO_PM_MARKET)
                                          for k in (3, 0, 2, 1, 7)])  # fmt: skip
    q = from_columns(cols)
    assert (q.states, q.no_market, q.gaps) == (5, 1, 3)  # unordered input sorted; ticks 4..6 missing
    assert discovery_errors(["http://127.0.0.1:9/metrics"], timeout_s=0.2) is None  # nobody answered


def test_verdict_and_trading_phase_say_what_happened() -> None:
    comps = {"hold": {"mean_diff": 0.01, "ci_lo": -0.02, "ci_hi": 0.04, "beats": 0.0},
             "momentum": {"mean_diff": 0.05, "ci_lo": 0.01, "ci_hi": 0.09, "beats": 1.0}}  # fmt: skip
    v = verdict({"promoted": False, "version": "v1"}, comps)
    assert v.startswith("NOT PROMOTED") and "hold" in v and "includes zero" in v and "momentum" not in v
    assert verdict({"promoted": True, "version": "v1"}, comps).startswith("PROMOTED")
    assert "new model" not in _trading_phase({"status": "finished", "result": {"promoted": False}}, 20)
    assert "training failed" in _trading_phase({"status": "failed", "error": "boom"}, 20)
    assert "trading on the new model" in _trading_phase({"status": "finished", "result": {"promoted": True}}, 20)


def test_help_shows_defaults_without_credentials() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUSION_REDIS_URL": "redis://user:s3cret@h:1/0"}
    for argv, want in ((["demo"], "(default: 360.0)"), (["sim", "synthetic"], "(default: 1)"),
                       (["models"], "redis://user:***@h:1/0")):  # fmt: skip
        out = subprocess.run([sys.executable, "-m", "fusion.cli", *argv, "--help"], env=env, capture_output=True,
                             text=True, timeout=60, cwd=ROOT).stdout  # fmt: skip
        assert want in " ".join(out.split()), (argv, out)
        assert "s3cret" not in out


def test_redis_survives_ctrl_c_of_the_terminal(tmp_path: Path) -> None:
    srv = RedisServer(workdir=str(tmp_path), detach=True).start()
    try:
        assert srv.proc is not None and os.getsid(srv.proc.pid) != os.getsid(0)  # not in the terminal's group
    finally:
        srv.stop()


def test_what_the_demo_made_is_reusable_after_it_ended(tmp_path: Path) -> None:
    """fusion.env + redis.conf: the printed commands find the demo's store and its Redis (from the AOF)."""
    work = tmp_path / "demo"
    (work / "logs").mkdir(parents=True)
    srv = RedisServer(appendonly=True, workdir=str(work / "redis"), detach=True).start()
    d = Demo(argparse.Namespace(), work, ["BTC-5M"], redis_server=srv, redis_url=srv.url)
    store = LocalStore(work / "store")
    store.put("models/demo/x", b"1")
    d.env = {"FUSION_REDIS_URL": srv.url, "FUSION_STORE_URL": store.url, "FUSION_POLICY": "demo"}
    cmds = write_settings(d, store)
    _publish(redis.Redis.from_url(srv.url), "BTC-5M", [1_700_000_000_000], [0])
    srv.stop()  # the demo ended
    env_line, conf_line = cmds[0], next(c for c in cmds if c.startswith("redis-server"))
    fusion = f"{sys.executable} -m fusion.cli"
    script = (f"{env_line}\n{conf_line.split('#')[0]}\nsleep 0.5\n{fusion} models ls && {fusion} streams ls\nrc=$?\n"
              f"redis-cli -p {srv.port} shutdown nosave\nexit $rc")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    out = subprocess.run(["bash", "-c", script], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout and "BTC-5M" in out.stdout, out.stdout
    assert (work / "fusion.env").read_text().count("FUSION_") == 3


def test_live_view_shows_quality_and_warnings(r: redis.Redis, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    t0 = 1_700_000_000_000
    _publish(r, "BTC-5M", [t0 + 500 * k for k in range(20)], [NO_PM_MARKET] * 5 + [0] * 15)
    d = Demo(argparse.Namespace(), tmp_path, ["BTC-5M"], quality=StreamQuality(["BTC-5M"]))
    d.phase = "collecting"
    buf = io.StringIO()
    Console(file=buf, width=200).print(d.table(r, LocalStore(tmp_path / "store")))
    text = buf.getvalue()
    assert "25.0%" in text and "warning: BTC-5M: 25% of 20 states had no Polymarket market" in text, text
    assert "model=none (holds)" in text


def test_summary_is_one_human_report() -> None:
    import io

    from rich.console import Console

    from fusion.demo.report import print_summary

    ci = {"pnl_per_window": 0.01, "pnl_per_window_ci95": [-0.01, 0.03], "trades": 12, "windows": 26}
    rep = {
        "markets": {"BTC-5M": {"states_in_stream": 9000, "archived_states": 9000, "archived_labels": 8800,
                               "archive_exactly_once": True, "windows": 30, "simulated_s": 9000.0,
                               "quality": {"no_market_fraction": 0.2, "gaps": 0, "discovery_errors": 2}}},
        "warnings": ["BTC-5M: 20% of 9,000 states had no Polymarket market"],
        "observed_wall_s": 450.0, "wall_s": 540.0,
        "training": {"algorithm": "ppo", "backend": "torch", "policy": "demo", "version": "v1", "promoted": False,
                     "holdout": {"candidate": ci, "hold": {**ci, "trades": 0}}, "decision": {"reason": "r"}},
        "comparisons": {"hold": {"mean_diff": 0.01, "ci_lo": -0.02, "ci_hi": 0.04, "beats": 0.0}},
        "pnl_before_swap": {"model": None, "ticks": 10, "pnl": {"equity_usd": 0.0}},
        "trader_at_swap": {"model": "v1", "ticks": 50, "decisions": 80, "missed_ticks": 20, "pnl": {"fills": 2}},
        "pnl_after_swap": {"model": "v1", "markets": ["BTC-5M", "ETH-5M"], "ticks": 150, "decisions": 275,
                           "missed_ticks": 25, "pnl": {"fills": 6, "realised_usd": 3.5}},
        "files": {"report_json": "/x/report.json", "logs": "/x/logs", "store": "file:///x/store",
                  "training_report": "file:///x/store/models/demo/v1/report.html", "reuse": ["set -a; . x; set +a"]},
    }  # fmt: skip
    buf = io.StringIO()
    print_summary(Console(file=buf, width=240), rep, 100.0, 20.0)
    text = " ".join(buf.getvalue().split())
    for want in ("NOT PROMOTED", "[-0.0200, +0.0400] includes zero", "warning: BTC-5M: 20%", "report.html",
                 "model none (holds)", "at most $100", "about 20x",
                 "100 ticks of 2 markets, 195 decisions, 5 ticks missed (decided on 98% of the market ticks)",
                 "set -a; . x; set +a"):  # fmt: skip
        assert want in text, (want, text)
    assert "{" not in text  # no dict dumped
