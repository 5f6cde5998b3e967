"""Issue 14: ``fusion backfill`` against local servers answering in the venues' response shapes
(tests/fusion/venues.py): resumable, retried, fidelity explicit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from archiver_svc.reader import load_market
from common.schema import DERIVED_POLY_BOOK, ORIGIN_BACKFILLED, ORIGIN_IMPORTED, RAW_INDEX
from common.store import LocalStore
from fusion.importers.backfill import backfill_main
from tests.fusion.venues import Venues

M = "BTC-15M"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
N_WINDOWS = 8


@pytest.fixture()
def venues() -> Iterator[Venues]:
    v = Venues()
    v.serve_windows([T0 + 900 * k for k in range(N_WINDOWS)])
    yield v
    v.close()


def run(capsys, v: Venues, store: LocalStore, cache, *extra: str) -> tuple[int, dict]:
    rc = backfill_main(["--market", M, "--from", str(T0 * 1000), "--to", str((T0 + 900 * N_WINDOWS) * 1000),
                        "--gamma-url", f"{v.url}/gamma", "--clob-url", f"{v.url}/clob", "--data-url", f"{v.url}/data",
                        "--binance-data-url", f"{v.url}/binance", "--rate", "500", "--cache-dir", str(cache),
                        "--store-url", store.url, "--json", "--no-progress", *extra])  # fmt: skip
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_backfill_writes_flagged_states_with_outcomes_and_binance(tmp_path, capsys, venues) -> None:
    venues.fail = {"prices-history": 2}  # two 500s: retried
    store = LocalStore(tmp_path / "s")
    rc, rep = run(capsys, venues, store, tmp_path / "cache")
    assert rc == 0 and rep["windows_fetched"] == N_WINDOWS and rep["states_written"] == N_WINDOWS * 90
    assert rep["fidelity"]["up_bid_px_0"] == "derived" and rep["fidelity"]["up_last_trade_px"] == "recorded"
    assert rep["fidelity"]["bn_trades_10s"] == "recorded"
    assert not list(store.list("market-data/"))  # never the recorded archive
    st = load_market(store, M, origin="imported", labels=False).states
    assert np.all(st.flags & ORIGIN_BACKFILLED) and not np.any(st.flags & ORIGIN_IMPORTED)
    assert np.all(st.flags & DERIVED_POLY_BOOK)
    settle = st.raw[:, RAW_INDEX["pm_prev_settle_up"]]
    assert np.isfinite(settle[st.tick_ms >= (T0 + 900) * 1000]).all()  # Gamma's outcomes reach the next window
    spread = st.raw[:, RAW_INDEX["up_ask_px_0"]] - st.raw[:, RAW_INDEX["up_bid_px_0"]]
    assert np.allclose(spread[np.isfinite(spread)], 0.01, atol=1e-9)
    assert np.isfinite(st.raw[:, RAW_INDEX["bn_last_px"]]).all()


def test_backfill_resumes_where_it_failed_and_ends_as_a_clean_run(tmp_path, capsys, venues) -> None:
    store, cache = LocalStore(tmp_path / "s"), tmp_path / "cache"
    broken = T0 + 900 * 5
    venues.fail = {f"startTs={broken}": -1}  # that window's price history keeps failing
    rc, rep = run(capsys, venues, store, cache)
    assert rc == 1 and [f["window_start"] for f in rep["windows_failed"]] == [broken]
    assert rep["windows_fetched"] == N_WINDOWS - 1
    first = rep["network_requests"]
    venues.fail = {}
    rc, rep = run(capsys, venues, store, cache)
    assert rc == 0 and rep["windows_fetched"] == N_WINDOWS
    assert rep["network_requests"] <= 4 < first  # only what was missing: the window's histories and trades
    clean_store = LocalStore(tmp_path / "clean")
    rc, _ = run(capsys, venues, clean_store, tmp_path / "cache2")
    a = load_market(store, M, origin="imported", labels=False).states
    b = load_market(clean_store, M, origin="imported", labels=False).states
    assert np.array_equal(a.tick_ms, b.tick_ms) and np.array_equal(a.raw, b.raw, equal_nan=True)


def test_backfill_answers_429_with_retry_and_a_series_needs_its_range(tmp_path, capsys, venues) -> None:
    venues.fail_status, venues.fail = 429, {"/gamma/events": 3}
    rc, rep = run(capsys, venues, LocalStore(tmp_path / "s"), tmp_path / "cache")
    assert rc == 0 and venues.hits["/gamma/events"] == N_WINDOWS + 3
    with pytest.raises(SystemExit):  # fixed markets: tests/fusion/test_backfill_dumps.py
        backfill_main(["--market", M, "--from", "0"])
