"""The monitor's pure parts: the state machine on synthetic per-window PnL series, the hold-out reference from
meta.json (new and old), and the fold of a trader's records into per-window live PnL."""

from __future__ import annotations

import math

import numpy as np

from trainer_svc.live_windows import LiveFold
from trainer_svc.monitor import HoldoutRef, Machine, MonitorConfig, WindowResult

CFG = MonitorConfig(k=3, windows=12, alpha=0.001, gap_bound=0.5)
W = 300_000


def _ref(seed: int = 0, mean: float = 0.05, sd: float = 0.4, n: int = 40) -> HoldoutRef:
    pnl = np.random.default_rng(seed).normal(mean, sd, n).round(6).tolist()
    return HoldoutRef.from_meta({"holdout_window_pnl": pnl})


def _feed(m: Machine, ref: HoldoutRef, live: list[float], backtest: list[float] | None = None) -> list[bool]:
    out = []
    for i, x in enumerate(live):
        b = backtest[i] if backtest is not None else x
        out.append(m.feed(WindowResult("BTC-5M", i * W, (i + 1) * W, x, b), ref, CFG).trip)
    return out


def test_a_model_far_below_its_holdout_trips_after_exactly_k_windows() -> None:
    ref = _ref()
    m = Machine(version="bad")
    trips = _feed(m, ref, [-2.0] * 6)
    assert trips == [False, False, True, False, False, False]  # once, on the k-th window
    assert "below the hold-out bound" in m.tripped and m.consecutive_holdout == 6


def test_a_model_like_its_holdout_rarely_trips() -> None:
    """Live windows drawn from the hold-out's own distribution: over 200 series of 60 windows, few false alarms."""
    ref = _ref()
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(200):
        m = Machine(version="good")
        alarms += any(_feed(m, ref, rng.choice(ref.pnl, 60).tolist()))
    assert alarms / 200 <= 0.02, alarms


def test_breaches_must_be_consecutive() -> None:
    ref = HoldoutRef.from_meta({"holdout_window_pnl": [0.1] * 20})  # bound 0.1 for any n
    m = Machine(version="v")
    # rolling mean below, then back above, then below: the count restarts
    assert not any(_feed(m, ref, [0.0, 0.0, 0.5, 0.5, 0.5, 0.5]))
    assert m.consecutive_holdout == 0


def test_execution_gap_trips_on_its_own() -> None:
    ref = HoldoutRef("none")  # no hold-out figures: only the gap rule can trip
    m = Machine(version="v")
    trips = _feed(m, ref, [0.0] * 4, backtest=[1.0] * 4)
    assert trips == [False, False, True, False] and "live minus backtest" in m.tripped
    m2 = Machine(version="v")
    assert not any(_feed(m2, ref, [0.0] * 10, backtest=[0.3] * 10))  # within the bound


def test_state_round_trips_and_resumes_identically() -> None:
    ref = _ref()
    a, b = Machine(version="v"), Machine(version="v")
    series = [0.1, -2.0, -2.0]
    _feed(a, ref, series)
    _feed(b, ref, series[:2])
    b = Machine.from_dict(b.to_dict())  # a restart between two windows
    assert b.feed(WindowResult("BTC-5M", 2 * W, 3 * W, -2.0, -2.0), ref, CFG).trip is False
    assert a.to_dict() == b.to_dict()


def test_holdout_reference_from_old_meta_uses_the_interval() -> None:
    meta = {"holdout_metrics": {"pnl_per_window": 0.1, "pnl_per_window_ci95": [0.0, 0.2], "windows": 16}}
    ref = HoldoutRef.from_meta(meta)
    assert ref.kind == "normal" and math.isclose(ref.sd, 0.1 / 1.959964 * 4, rel_tol=1e-6)
    assert ref.lower(16, 0.025) is not None and math.isclose(ref.lower(16, 0.025), 0.0, abs_tol=1e-4)
    assert ref.lower(1, 0.01) < ref.lower(12, 0.01) < 0.1  # fewer windows: a wider bound
    assert HoldoutRef.from_meta({}).kind == "none" and HoldoutRef.from_meta({}).lower(3, 0.01) is None
    bad = {"holdout_window_pnl": [0.1, float("nan")], "holdout_metrics": {"pnl_per_window": "x"}}
    assert HoldoutRef.from_meta(bad).kind == "none"


def _dec(m: str, tick: int, model: str) -> dict:
    return {"type": "decision", "market": m, "tick": tick, "model": model}


def _fill(m: str, kind: str, tick: int, realised: float = 0.0, **kw: object) -> dict:
    return {"type": "fill", "market": m, "kind": kind, "tick": tick, "realised": realised, "fee": 0.5, **kw}


def test_fold_attributes_pnl_to_the_window_a_position_was_opened_in() -> None:
    f = LiveFold(gap_ms=10_000)
    end1 = W
    for t in range(0, W, 5000):
        f.feed(_dec("M", t, "v1"))
    f.feed(_fill("M", "open", 1000, model="v1", window_end_s=end1 / 1000, want=100.0))
    f.feed(_fill("M", "close", 2000, realised=3.0, partial=True, model="v1"))
    f.feed(_dec("M", W + 1000, "v1"))  # the trader is past the window's end, the position is still open
    assert not f.window("M", 0, W).closed
    f.feed(_fill("M", "settle", W + 1500, realised=-7.0, model="v1"))
    lw = f.window("M", 0, W)
    assert lw.closed and lw.pnl_usd == -4.0 and lw.opens == 1 and lw.closes == 1 and lw.want_usd == 100.0
    assert lw.models == ("v1",) and lw.coverage > 0.95
    f.feed({"type": "fill", "market": "M", "kind": "close", "realised": 1.0})  # nothing open: an orphan
    assert f.orphans == 1
    g = LiveFold.from_dict(f.to_dict())
    assert g.window("M", 0, W) == lw


def test_fold_coverage_and_models_per_window() -> None:
    f = LiveFold(gap_ms=10_000)
    for t in range(0, W // 2, 5000):
        f.feed(_dec("M", t, "v1"))
    for t in range(W // 2, W + 5000, 5000):
        f.feed(_dec("M", t, "v2"))  # swapped mid-window
    assert f.window("M", 0, W).models == ("v1", "v2")
    assert f.first_tick("M", "v2") == W // 2 and f.first_tick("M", "v1") is None
    h = LiveFold(gap_ms=10_000)
    for t in list(range(0, 60_000, 5000)) + list(range(240_000, W + 5000, 5000)):  # down for 3 minutes
        h.feed(_dec("M", t, "v1"))
    lw = h.window("M", 0, W)
    assert lw.models == ("v1",) and 0.3 < lw.coverage < 0.5
    h.forget("M", W)
    assert h.runs["M"] and all(r[1] >= W for r in h.runs["M"])
