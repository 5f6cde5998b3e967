"""Issue 14: ``fusion train`` on what ``fusion import`` wrote (the generic fixture), and the fidelity filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver_svc.importers.cli import import_main
from common.schema import DERIVED_BINANCE_BOOK, ORIGIN_IMPORTED
from common.store import LocalStore
from trainer_svc.pipeline import JobParams, load_data, run_training

FIX = Path(__file__).parents[1] / "fixtures" / "imports"
M = "BTC-15M"


@pytest.fixture()
def imported(tmp_path, capsys) -> LocalStore:
    store = LocalStore(tmp_path / "s")
    assert import_main([str(FIX / "generic.csv"), "--market", M, "--store-url", store.url, "--json"]) == 0
    capsys.readouterr()
    return store


def test_train_on_imported_data(imported) -> None:
    out = run_training(JobParams(market=M, store_url=imported.url, origin="imported", promote=False,
                                 overrides={"epochs": 1}))  # fmt: skip
    assert out["data"]["origin"] == "imported" and out["data"]["n_states"] == 1080
    assert out["splits"]["holdout"]["states"] > 0 and out["splits"]["train"]["windows"] >= 6


def test_the_trainer_reads_recorded_imported_or_both_and_filters_on_fidelity(imported) -> None:
    with pytest.raises(ValueError, match="no states"):  # the recorded archive is empty
        load_data(JobParams(market=M, store_url=imported.url, origin="recorded"), (30, 60, 300))
    states, _, info = load_data(JobParams(market=M, store_url=imported.url), (30, 60, 300))  # default: both
    assert len(states) == 1080 and bool((states.flags & ORIGIN_IMPORTED).all())
    with pytest.raises(ValueError, match="no states"):  # every state's Binance book is derived from a price
        load_data(JobParams(market=M, store_url=imported.url, exclude_flags=DERIVED_BINANCE_BOOK), (30, 60, 300))
