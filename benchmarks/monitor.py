"""The monitor on the simulator, end to end with real processes, repeated: false alarms and detection delay.

One run (:func:`scenario`): Redis, the venue simulator (``BTC-5M``, lead-lag), an observer, the archiver, the paper
trader and ``fusion monitor --rollback`` as separate processes. The trader first holds (no champion) while
``warm`` windows are archived; a *good* model (hand-made, it buys the side Binance says is cheap when
``fair_gap`` is beyond a threshold, and holds otherwise) is then backtested on those windows (its hold-out, written
to its meta.json as the trainer writes it) and promoted; after ``good`` windows judged by the monitor a *bad* model
(hand-made: it buys and sells every tick, paying the spread and the fees each time) is saved with the good one's
meta.json (a model whose hold-out promised what it does not deliver) and promoted by hand. Figures: did the monitor
roll back the good model (a false alarm), how many judged windows and seconds it took to roll the bad one back,
and whether the trader swapped back to the good one on the ``model-rolled-back`` event.

``python -m benchmarks.monitor [--runs N]`` or ``fusion bench monitor`` (quick: 1 run, else 5) prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARKET = "BTC-5M"
POLICY = "mon"
TRADER = "mon-trader"
FAIR_GAP, HAS_POSITION = 17, 20


def good_weights(threshold: float = 0.1) -> dict[str, np.ndarray]:
    """Buy Up when ``fair_gap > threshold``, Down when ``< -threshold``; close a position when the gap turns
    the other way beyond the threshold (LayerNorm keeps the order of the units: unit 0 > unit 2 iff the gap is above
    the threshold)."""
    from common.policy import HIDDEN, INPUT_DIM

    w = _zero(HIDDEN, INPUT_DIM)
    w["actor.fc1.weight"][0, FAIR_GAP], w["actor.fc1.bias"][0] = 1.0, -threshold
    w["actor.fc1.weight"][1, FAIR_GAP], w["actor.fc1.bias"][1] = -1.0, -threshold
    w["actor.out.weight"][1, 0], w["actor.out.weight"][1, 2] = 5.0, -5.0  # buy_up: unit0 - unit2
    w["actor.out.weight"][2, 1], w["actor.out.weight"][2, 2] = 5.0, -5.0  # buy_down: unit1 - unit2
    return w


def churn_weights() -> dict[str, np.ndarray]:
    """Flat: buy Up; holding: buy Down (which closes it). A round trip every two decisions."""
    from common.policy import HIDDEN, INPUT_DIM

    w = _zero(HIDDEN, INPUT_DIM)
    w["actor.fc1.weight"][0, HAS_POSITION], w["actor.fc1.bias"][0] = 1.0, -0.5
    w["actor.fc1.weight"][1, HAS_POSITION], w["actor.fc1.bias"][1] = -1.0, 0.5
    w["actor.out.weight"][1, 1], w["actor.out.weight"][1, 0] = 5.0, -5.0  # buy_up when flat
    w["actor.out.weight"][2, 0], w["actor.out.weight"][2, 1] = 5.0, -5.0  # buy_down (close) when holding
    return w


def _zero(hidden: int, inp: int) -> dict[str, np.ndarray]:
    from common.policy import param_shapes

    w = {k: np.zeros(s, np.float32) for k, s in param_shapes("actor", hidden).items()}
    w["actor.ln1.weight"][:] = 1.0
    w["actor.ln2.weight"][:] = 1.0
    w["actor.fc2.weight"][:] = np.eye(hidden, dtype=np.float32)
    return w


def _events(r: Any) -> list[dict[str, Any]]:
    return [msgpack.unpackb(f[b"d"], raw=False) for _, f in r.xrange("fusion:events")]


def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def scenario(workdir: Path, seed: int = 0, speed: float = 60.0, warm: int = 6, good: int = 6, k: int = 3,
             gap_bound: float = 1.0, kill_monitor: bool = False,
             timeout_s: float = 240.0) -> dict[str, Any]:  # fmt: skip
    """One run (see the module docstring); returns its figures. ``kill_monitor``: SIGKILL and restart the monitor
    once while it judges the good model (a restart resumes from its state in Redis)."""
    import redis

    from common import artefact, keys
    from common.policy import architecture, meta_features
    from common.redisproc import RedisServer
    from common.store import LocalStore
    from observer_svc.sim.synthetic import SyntheticDriver
    from observer_svc.sim.thread import SimServerThread
    from trainer_svc.algos import TrainConfig

    t_start = time.time()
    store_dir, logs = workdir / "store", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    store = LocalStore(store_dir)
    srv = RedisServer(workdir=str(workdir / "redis")).start()
    sim = SimServerThread(SyntheticDriver([MARKET], seed=seed, speed=speed, lag_s=20.0)).start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUSION_REDIS_URL": srv.url, "FUSION_STORE_URL": f"file://{store_dir}",
           "FUSION_FEED": "sim", "FUSION_SIM_URL": sim.url, "FUSION_MARKETS": MARKET, "FUSION_DISCOVERY_LEAD_S": "600",
           "FUSION_ARCHIVE_WINDOW_S": "60", "FUSION_ARCHIVE_GRACE_S": "5", "FUSION_CACHE_DIR": str(workdir / "cache"),
           "FUSION_TRADER_MARKETS": MARKET, "FUSION_TRADER_ID": TRADER, "FUSION_POLICY": POLICY,
           "FUSION_POSITION_USD": "10", "FUSION_MAX_DAILY_LOSS_USD": "1000000", "FUSION_MONITOR_K": str(k),
           "FUSION_MONITOR_GAP_BOUND": str(gap_bound),
           "FUSION_MONITOR_EVERY_S": "1", "FUSION_MONITOR_ROLLBACK": "true", "FUSION_LOG_LEVEL": "INFO"}  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    r = redis.Redis.from_url(srv.url)
    out: dict[str, Any] = {"seed": seed, "speed": speed, "k": k, "gap_bound": gap_bound}
    try:

        def start(name: str, *argv: str) -> None:
            with (logs / f"{name}.log").open("ab") as fh:
                procs[name] = subprocess.Popen([sys.executable, "-m", "fusion.cli", *argv], env=env, cwd=ROOT,
                                               stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip

        for name, argv in (("observer", ["observe"]), ("archiver", ["archive", "--consumer", "a1"]),
                           ("trader", ["trade"]), ("monitor", ["monitor"])):  # fmt: skip
            start(name, *argv)
        # warm-up: `warm` settled windows archived while the trader holds
        from archiver_svc.rawcols import TRAIN_FIELDS
        from archiver_svc.reader import load_market
        from trainer_svc.backtest import replay_windows
        from trainer_svc.windows import segment

        def settled() -> tuple[Any, Any, np.ndarray]:
            md = load_market(store, MARKET, labels=False, raw_fields=TRAIN_FIELDS)
            w = segment(md.states)
            ok = np.flatnonzero(np.isfinite(w.settle))[1:]  # the first window is partial (observer started in it)
            return md.states, w, ok

        _wait(lambda: settled()[2].size >= warm, timeout_s, "warm-up windows")
        states, w, ok = settled()
        meta = {**meta_features(), "architecture": architecture(), "algorithm": "hand-made",
                "hyper_parameters": TrainConfig().to_dict(), "data": {"market": MARKET}}  # fmt: skip
        gw = good_weights()
        hold = replay_windows(gw, meta, states, w, ok)
        meta["holdout_window_pnl"] = [round(float(x), 9) for x in hold]
        out["holdout_pnl_per_window"] = round(float(hold.mean()), 6)
        good_v = artefact.save_model(store, POLICY, gw, meta, version="good-" + str(seed)).version
        artefact.promote(store, POLICY, good_v, r)
        t_good = time.time()

        def judged(version: str) -> int:
            h = r.hgetall(keys.monitor_state_key(POLICY, TRADER))
            if b"d" not in h:
                return 0
            st = msgpack.unpackb(h[b"d"], raw=False)
            return sum(1 for x in st.get("recent") or [] if "window" in x and x.get("version") == version)

        if kill_monitor:
            _wait(lambda: judged(good_v) >= 2, timeout_s, "two windows of the good model judged")
            procs["monitor"].kill()
            procs["monitor"].wait(10)
            start("monitor", "monitor")
            out["monitor_killed_after_windows"] = judged(good_v)
        _wait(lambda: judged(good_v) >= good, timeout_s, "windows of the good model judged")
        out["good_windows_judged"] = judged(good_v)
        out["good_seconds"] = round(time.time() - t_good, 1)
        from trainer_svc.monitor_svc import comparison

        out["good_comparison"] = {k_: v for k_, v in comparison(r, POLICY, TRADER).items() if k_ != "windows"}
        tripped = out["good_comparison"].get("tripped") or ""
        out["false_alarm"] = bool(tripped)  # a trip (no previous champion: alert only)
        out["false_alarm_rules"] = [rule for rule, words in (("holdout", "hold-out"), ("gap", "live minus backtest"))
                                    if words in tripped]  # fmt: skip
        st = json.loads(r.get(keys.trader_status_key(TRADER)) or b"{}")
        decided, missed = int(st.get("decisions") or 0), int(st.get("missed_ticks") or 0)
        out["trader_decided_share"] = round(decided / (decided + missed), 3) if decided + missed else None
        if out["false_alarm"]:
            return out
        bad_v = artefact.save_model(store, POLICY, churn_weights(), meta, version="bad-" + str(seed)).version
        artefact.promote(store, POLICY, bad_v, r)
        t_bad = time.time()
        _wait(lambda: any(e.get("type") == "model-rolled-back" for e in _events(r)), timeout_s, "rollback")
        out["detection_s"] = round(time.time() - t_bad, 1)
        out["detection_windows"] = judged(bad_v)
        ev = next(e for e in _events(r) if e.get("type") == "model-rolled-back")
        out["rolled_back_to"], out["reason"] = ev["version"], ev["reason"]
        status = keys.trader_status_key(TRADER)
        _wait(lambda: json.loads(r.get(status) or b"{}").get("model") == good_v, 60, "trader back on the good model")
        out["trader_back_s"] = round(time.time() - t_bad, 1)
        st = msgpack.unpackb(r.hget(keys.monitor_state_key(POLICY, TRADER), "d"), raw=False)
        seen = [(x.get("version"), x["window"]["market"], x["window"]["end_ms"]) for x in st["recent"] if "window" in x]
        out["windows_judged_twice"] = len(seen) - len(set(seen))
        swaps = [msgpack.unpackb(f[b"d"], raw=False) for _, f in r.xrange(keys.trades_stream(TRADER))]
        out["swap_sources"] = [s.get("source") for s in swaps if s.get("type") == "swap"]
        out["after_rollback"] = {k_: v for k_, v in comparison(r, POLICY, TRADER).items() if k_ != "windows"}
        return out
    finally:
        out["seconds"] = round(time.time() - t_start, 1)
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        sim.stop()
        r.close()
        srv.close()


def synthetic(series: int = 300, windows: int = 60, shift_sd: float = 0.75) -> dict[str, Any]:
    """The state machine alone (default settings) on synthetic series: live windows drawn from a 40-window hold-out
    (false alarms per series of ``windows``), and the same shifted down by ``shift_sd`` of its sd (detection)."""
    from trainer_svc.monitor import HoldoutRef, Machine, MonitorConfig, WindowResult

    cfg = MonitorConfig()
    pnl = np.random.default_rng(0).normal(0.05, 0.4, 40)
    ref = HoldoutRef.from_meta({"holdout_window_pnl": pnl.tolist()})
    rng = np.random.default_rng(7)

    def first_trip(xs: np.ndarray) -> int | None:
        m = Machine(version="v")
        for i, x in enumerate(xs.tolist()):
            if m.feed(WindowResult("M", i, i + 1, x, x), ref, cfg).trip:
                return i + 1
        return None

    alarms = [first_trip(rng.choice(pnl, windows)) for _ in range(series)]
    shifted = [first_trip(rng.choice(pnl, windows) - shift_sd * pnl.std()) for _ in range(series)]
    det = [x for x in shifted if x is not None]
    return {"series": series, "windows_per_series": windows, "k": cfg.k, "alpha": cfg.alpha,
            "false_alarm_rate_per_series": round(sum(x is not None for x in alarms) / series, 4),
            "shift_sd": shift_sd, "detected_rate": round(len(det) / series, 4),
            "detection_windows_median": float(np.median(det)) if det else None}  # fmt: skip


def run(quick: bool = False, runs: int | None = None, good: int = 12) -> dict[str, Any]:
    n = runs or (1 if quick else 5)
    res = []
    for i in range(n):
        with tempfile.TemporaryDirectory(prefix="fusion-mon-") as d:
            try:
                res.append(scenario(Path(d), seed=100 + i, good=6 if quick else good))
            except TimeoutError as e:
                res.append({"seed": 100 + i, "error": str(e)})
    ok = [x for x in res if "error" not in x]
    det = [x["detection_windows"] for x in ok if "detection_windows" in x]
    return {
        "runs": n,
        "runs_completed": len(ok),
        "false_alarm_rate": round(sum(bool(x["false_alarm"]) for x in ok) / len(ok), 3) if ok else None,
        "false_alarms_by_rule": {r: sum(r in x.get("false_alarm_rules", []) for x in ok) for r in ("holdout", "gap")},
        "trader_decided_share": [x.get("trader_decided_share") for x in ok],
        "good_windows_judged_total": sum(x.get("good_windows_judged", 0) for x in ok),
        "detected_rate": round(len(det) / len(ok), 3) if ok else None,
        "detection_windows_median": float(np.median(det)) if det else None,
        "detection_windows_max": max(det) if det else None,
        "detection_s_median": float(np.median([x["detection_s"] for x in ok if "detection_s" in x])) if det else None,
        "good_live_over_backtest": [_ratio(x.get("good_comparison") or {}) for x in ok],
        "state_machine_on_synthetic_series": synthetic(),
        "per_run": res,
    }


def _ratio(c: dict[str, Any]) -> float | None:
    """What the trader realised of the backtest's PnL on the same windows (execution: missed ticks, book walking)."""
    b = c.get("backtest_total")
    return round(c["live_total"] / b, 3) if b else None


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.monitor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--good", type=int, default=12, help="windows of the good model judged per run")
    ap.add_argument("--synthetic-only", action="store_true", help="only the state machine on synthetic series")
    a = ap.parse_args()
    if a.synthetic_only:
        print(json.dumps(synthetic(), indent=1))
        raise SystemExit(0)
    print(json.dumps(run(runs=a.runs, good=a.good), indent=1, default=str))
