"""Issue 14: ``fusion train`` on what ``fusion import`` wrote (the generic fixture), and the fidelity filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.schema import DERIVED_BINANCE_BOOK, ORIGIN_IMPORTED
from common.store import LocalStore
from fusion.importers.cli import import_main
from trainer_svc.pipeline import JobParams, load_data

FIX = Path(__file__).parents[1] / "fixtures" / "imports"
M = "BTC-15M"


@pytest.fixture()
def imported(tmp_path, capsys) -> LocalStore:
    store = LocalStore(tmp_path / "s")
    assert import_main([str(FIX / "generic.csv"), "--market", M, "--store-url", store.url, "--json"]) == 0
    capsys.readouterr()
    return store


def test_fusion_train_on_imported_data(tmp_path, redis_url, capsys) -> None:
    import csv

    from tests.fixtures.imports.make import generic_rows
    from trainer_svc.cli import train_main

    rows = generic_rows(n_windows=24)  # the fixture's generator, twice its windows: a hold-out needs 2
    with (tmp_path / "generic24.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    store = LocalStore(tmp_path / "s")
    assert import_main([str(tmp_path / "generic24.csv"), "--market", M, "--store-url", store.url, "--json"]) == 0
    capsys.readouterr()
    rc = train_main(["--market", M, "--inline", "--data-source", "imported", "--epochs", "1", "--no-promote",
                     "--store-url", store.url, "--redis-url", redis_url])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["data"]["origin"] == "imported" and out["data"]["n_states"] == 24 * 90
    assert out["splits"]["holdout"]["windows"] >= 2 and out["splits"]["train"]["windows"] >= 12


def test_sync_brings_imported_objects_into_the_cache(imported, tmp_path) -> None:
    from archiver_svc.reader import load_market
    from archiver_svc.sync import sync

    sync(imported, tmp_path / "cache", progress=False)
    a = load_market(imported, M, origin="imported", labels=False).states
    b = load_market(tmp_path / "cache", M, origin="imported", labels=False).states
    assert len(b) == 1080 and np.array_equal(a.raw, b.raw, equal_nan=True)


def test_the_trainer_reads_recorded_imported_or_both_and_filters_on_fidelity(imported) -> None:
    with pytest.raises(ValueError, match="no states"):  # the recorded archive is empty
        load_data(JobParams(market=M, store_url=imported.url, origin="recorded"), (30, 60, 300))
    states, _, info = load_data(JobParams(market=M, store_url=imported.url), (30, 60, 300))  # default: both
    assert len(states) == 1080 and bool((states.flags & ORIGIN_IMPORTED).all())
    with pytest.raises(ValueError, match="no states"):  # every state's Binance book is derived from a price
        load_data(JobParams(market=M, store_url=imported.url, exclude_flags=DERIVED_BINANCE_BOOK), (30, 60, 300))
