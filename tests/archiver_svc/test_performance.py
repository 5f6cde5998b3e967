"""The daily performance summary is a pure fold of the day's records, per model version and in total."""

from __future__ import annotations

import json

import pytest

from archiver_svc.performance import summarize

H = 3_600_000


def fill(kind: str, market: str, model: str, cash: float, realised: float = 0.0, fee: float = 0.0, **kw) -> dict:
    return {"type": "fill", "kind": kind, "market": market, "model": model, "cash": cash, "realised": realised,
            "fee": fee, "partial": False, **kw}  # fmt: skip


def test_summary_per_model_and_total() -> None:
    recs = [
        {"type": "decision", "model": "a"},
        fill("open", "M1", "a", -30.0, fee=1.0),  # t=0: 30 held
        fill("open", "M2", "b", -20.0, fee=0.5),  # t=1h: 50 held
        fill("settle", "M1", "a", 0.0, -30.0),  # t=2h: a loses 30 (drawdown 30)
        fill("settle", "M2", "b", 40.0, 20.0),  # t=3h: b wins 20
        {"type": "refused", "model": "a", "reason": "kill switch"},
        {"type": "kill"},
        fill("open", "M1", "a", -10.0, fee=0.1),  # t=6h
        fill("close", "M1", "a", 15.0, 5.0, fee=0.2),  # t=7h: a wins 5
    ]
    ids = ["0-0", "0-1", f"{H}-0", f"{2 * H}-0", f"{3 * H}-0", f"{4 * H}-0", f"{5 * H}-0", f"{6 * H}-0", f"{7 * H}-0"]
    s = summarize("t1", "2026-01-01", ids, recs)
    a, b, t = s["models"]["a"], s["models"]["b"], s["total"]
    assert a["pnl_usd"] == -25.0 and b["pnl_usd"] == 20.0 and t["pnl_usd"] == -5.0
    assert a["fees_usd"] == pytest.approx(1.3) and t["fees_usd"] == pytest.approx(1.8)
    assert (a["trades"], a["closed"], a["wins"], a["win_rate"]) == (2, 2, 1, 0.5)
    assert (b["trades"], b["closed"], b["wins"], b["win_rate"]) == (1, 1, 1, 1.0)
    assert a["max_drawdown_usd"] == 30.0 and b["max_drawdown_usd"] == 0.0 and t["max_drawdown_usd"] == 30.0
    assert t["max_exposure_usd"] == 50.0 and a["max_exposure_usd"] == 30.0 and b["max_exposure_usd"] == 20.0
    # 30 USD for 2 h (a) + 20 USD for 2 h (b) + 10 USD for 1 h (a)
    assert a["exposure_usd_h"] == pytest.approx(70.0) and b["exposure_usd_h"] == pytest.approx(40.0)
    assert t["exposure_usd_h"] == pytest.approx(110.0)
    assert (a["decisions"], a["refusals"], s["kill_trips"], s["records"]) == (1, 1, 1, 9)
    # deterministic: the same records give the same bytes
    assert json.dumps(s, sort_keys=True) == json.dumps(summarize("t1", "2026-01-01", ids, recs), sort_keys=True)


def test_empty_day_and_carried_position() -> None:
    s = summarize("t1", "2026-01-02", [], [])
    assert s["total"]["win_rate"] is None and s["models"] == {} and s["first_id"] is None
    # a settlement of a position opened the day before: PnL counts, exposure (cost unknown today) does not
    s = summarize("t1", "2026-01-02", ["5-0"], [fill("settle", "M1", "a", 0.0, -12.0)])
    assert s["models"]["a"]["pnl_usd"] == -12.0 and s["total"]["max_exposure_usd"] == 0.0
