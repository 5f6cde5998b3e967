"""``fusion backtest`` (a real process) of a never-promoted version on its own hold-out range reproduces the
hold-out figures recorded in its ``meta.json``; on a pooled version and on a sub-range it replays only whole
windows of the range."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from archiver_svc.windows import encode_object, object_key
from common import artefact as registry
from common.features import FEATURE_SET
from common.schema import PolymarketWindow, State, encode_state
from common.store import LocalStore
from trainer_svc.backtest import run_backtest
from trainer_svc.pipeline import JobParams, run_training
from trainer_svc.synthetic import generate

W = 600_000


def archive(store: LocalStore, market: str, n: int, seed: int) -> None:
    cols = generate(n_states=n, seed=seed)
    wins: dict[int, dict[str, bytes]] = {}
    for i in range(len(cols)):
        t = int(cols.tick_ms[i])
        w0 = t // 900_000 * 900_000
        s = State(market, t, cols.raw[i], cols.features[i], FEATURE_SET, int(cols.flags[i]),
                  PolymarketWindow(cols.slugs[i], "0x1", "1", "2", w0, w0 + 900_000))  # fmt: skip
        wins.setdefault(t - t % W, {})[f"{t}-0"] = encode_state(s)
    for ws, entries in wins.items():
        store.put(object_key("states", market, ws), encode_object("states", market, ws, W, entries))


def backtest_cli(store: LocalStore, *args: str) -> dict:
    env = dict(os.environ, FUSION_STORE_URL=store.url, FUSION_LOG_LEVEL="WARNING", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-m", "fusion.cli", "backtest", *args, "--json"], env=env,
                         capture_output=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return json.loads(out.stdout)


@pytest.mark.slow
def test_backtest_of_a_version_on_its_holdout_reproduces_its_meta(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    archive(store, "BT-15M", 36_000, seed=3)  # 20 windows of 15 min
    out = run_training(JobParams(market="BT-15M", store_url=store.url, promote=False, seed=5,
                                 overrides={"epochs": 1, "hold_bias_grid": [-2.0]}))  # fmt: skip
    version = out["version"]
    assert registry.champion(store, "BT-15M") is None  # never promoted
    meta = registry.read_meta(store, "BT-15M", version)
    rep = backtest_cli(store, "--policy", "BT-15M", "--version", version, "--holdout")
    assert rep["windows"] == meta["splits"]["holdout"]["windows"]
    assert rep["states"] == meta["splits"]["holdout"]["states"]
    assert rep["metrics"]["model"] == meta["holdout_metrics"]
    assert rep["metrics"]["model"]["trades"] > 0 and rep["windows"] >= 2  # a model that trades, not a no-op
    for name in ("hold", "random", "momentum", "oracle"):
        assert rep["metrics"][name] == meta["baselines_metrics"][name], name
    assert store.exists(rep["report"]["json"]) and "<svg" in store.get(rep["report"]["html"]).decode()
    # the whole archive (20 windows), and a range that cuts the hold-out's first window: only the
    # windows wholly inside it
    assert run_backtest(store, "BT-15M", version, write=False)["windows"] == 20
    h = meta["splits"]["holdout"]
    if h["windows"] > 1:
        part = run_backtest(store, "BT-15M", version, from_ms=h["start_ms"] + 1, to_ms=h["end_ms"], write=False)
        assert part["windows"] == h["windows"] - 1 and part["from_ms"] > h["start_ms"]
    else:
        with pytest.raises(ValueError, match="no whole window"):
            run_backtest(store, "BT-15M", version, from_ms=h["start_ms"] + 1, to_ms=h["end_ms"], write=False)


@pytest.mark.slow
def test_backtest_pooled_version(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    archive(store, "PA-15M", 28_800, seed=1)
    archive(store, "PB-15M", 28_800, seed=2)
    out = run_training(JobParams(market="PA-15M,PB-15M", store_url=store.url, promote=False,
                                 overrides={"epochs": 1, "hold_bias_grid": [-2.0]}))  # fmt: skip
    meta = registry.read_meta(store, "PA-15M_PB-15M", out["version"])
    rep = run_backtest(store, "PA-15M_PB-15M", out["version"], holdout=True, write=False)
    assert rep["market"] == "PA-15M,PB-15M" and rep["windows"] == meta["splits"]["holdout"]["windows"]
    assert rep["metrics"]["model"] == meta["holdout_metrics"] and rep["metrics"]["model"]["trades"] > 0
