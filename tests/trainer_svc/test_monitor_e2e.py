"""Issue 13 with real processes on the simulator (slow): the monitor keeps a good champion that does what its
hold-out promised, and rolls a deliberately bad one (promoted by hand with the good one's meta.json) back within K
judged windows; the trader swaps back on ``model-rolled-back``; a SIGKILLed monitor resumes without judging a
window twice. The repeated runs (false-alarm rate, detection delay) are ``python -m benchmarks.monitor``."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.monitor import scenario


@pytest.mark.slow
def test_bad_champion_rolled_back_within_k_windows_good_one_kept(tmp_path: Path) -> None:
    k = 3
    # gap bound 1.0 (live may differ from the backtest by its whole PnL): on a loaded machine the trader at 60x decides
    # on a fraction of the ticks and realises a fraction of the backtest (benchmarks/monitor.py measures it); the
    # gap rule itself is tested in test_monitor.py. Here: the hold-out rule on real processes.
    out = scenario(tmp_path, seed=7, k=k, gap_bound=1.0, kill_monitor=True)
    assert out["false_alarm"] is False, out["good_comparison"]
    assert out["good_windows_judged"] >= 6 and out["monitor_killed_after_windows"] >= 2
    assert out["detection_windows"] is not None and k <= out["detection_windows"] <= k + 2, out
    assert out["rolled_back_to"] == "good-7" and out["reason"].startswith("monitor: ")
    assert "below the hold-out bound" in out["reason"]
    assert out["swap_sources"][-1] == "model-rolled-back"
    assert out["windows_judged_twice"] == 0
