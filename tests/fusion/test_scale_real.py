"""``benchmarks.scale_real`` on the repository's Binance excerpt (and the SYNTHETIC Polymarket CSV), as processes:
the observer's states are all archived and compacted, and the figures are consistent with each other."""

from __future__ import annotations

import pytest

from benchmarks.scale_real import run


def test_real_figures_on_the_excerpt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_SHARED_DATA", raising=False)
    r = run(synthetic_n=0)
    assert r["binance"].startswith("repository excerpt") and r["polymarket"].startswith("SIMULATED")
    real = r["real"]
    assert real["rows"] == r["states_in_binance_span"] > 100  # 60 s at 0.5 s, every state compacted
    assert real["chunk_bytes_per_state"] < real["file_bytes_per_state"]  # the footer is outside the chunks
    assert real["chunk_ratio_vs_json_gz"] == pytest.approx(
        real["chunk_bytes_per_state"] / real["json_gz_bytes_per_state"], abs=0.002
    )
    cols = r["columns"]
    assert cols["bn_last_px"]["type_real"].startswith("decimal") and cols["bn_buy_notional"]["type_real"] == "double"
    assert sum(c["real"] for c in cols.values()) == pytest.approx(real["chunk_bytes_per_state"], abs=0.5)
    assert r["synthetic_same_rows"]["rows"] == real["rows"]
