"""Issue 14: ``fusion backfill``'s Binance side downloaded from data.binance.vision's daily zips (served locally in
their exact shapes by tests/fusion/venues.py): 1-minute klines of spot and USD-M futures across the spot dumps'
switch from ms to us on 2025-01-01, verified against their CHECKSUM files, resumable after a kill, rate-limited;
and fixed (non-rolling) markets as one window from Gamma's metadata."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from archiver_svc.reader import load_market
from common.schema import DERIVED_BINANCE_BOOK, ORIGIN_BACKFILLED, RAW_INDEX
from common.store import LocalStore
from fusion.importers.backfill import backfill_main
from tests.fusion.venues import US_FROM_MS, Venues, kline_close

M = "BTC-15M"
T0 = US_FROM_MS // 1000 - 3600  # 2024-12-31T23:00:00Z: two hours across the spot dumps' ms -> us switch
N_WINDOWS = 8
ROOT = Path(__file__).parents[2]


@pytest.fixture()
def venues() -> Iterator[Venues]:
    v = Venues()
    v.serve_windows([T0 + 900 * k for k in range(N_WINDOWS)])
    yield v
    v.close()


def args(v: Venues, store: LocalStore, cache: Path, *extra: str, market: str = M) -> list[str]:
    span = ["--from", str(T0 * 1000), "--to", str((T0 + 900 * N_WINDOWS) * 1000)] if market == M else []
    return ["--market", market, *span, "--gamma-url", f"{v.url}/gamma", "--clob-url", f"{v.url}/clob",
            "--data-url", f"{v.url}/data", "--binance-data-url", f"{v.url}/binance", "--rate", "500",
            "--cache-dir", str(cache), "--store-url", store.url, "--json", "--no-progress", *extra]  # fmt: skip


def run(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = backfill_main(argv)
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def files(store: LocalStore, prefix: str = "imported/") -> dict[str, str]:
    return {o.key: hashlib.sha256(store.get(o.key)).hexdigest() for o in store.list(prefix)}


@pytest.mark.parametrize("kind", ["spot", "um"])
def test_klines_across_the_ms_to_us_switch_give_each_tick_the_last_closed_bar(tmp_path, capsys, venues, kind) -> None:
    store = LocalStore(tmp_path / "s")
    rc, rep = run(capsys, args(venues, store, tmp_path / "c", "--binance-data", "klines", "--binance-kind", kind))
    assert rc == 0 and rep["binance_days"] == 2 and rep["binance_days_verified"] == 2  # 12-31 (ms) and 01-01
    assert rep["fidelity"]["bn_last_px"] == "derived" and rep["states_written"] == N_WINDOWS * 90
    st = load_market(store, M, origin="imported", labels=False).states
    assert np.all(st.flags & ORIGIN_BACKFILLED) and np.all(st.flags & DERIVED_BINANCE_BOOK)
    want = [kline_close(kind, t - t % 60_000 - 60_000) for t in st.tick_ms.tolist()]  # known once closed
    assert np.array_equal(st.raw[:, RAW_INDEX["bn_last_px"]], np.array(want))
    after = st.tick_ms >= US_FROM_MS + 60_000
    assert after.sum() == 4 * 90 - 6  # the us-stamped day's bars are read as such (not placed in year 56,000)


def test_a_zip_that_fails_its_checksum_is_downloaded_again_and_never_cached(tmp_path, capsys, venues) -> None:
    store, cache = LocalStore(tmp_path / "s"), tmp_path / "c"
    day = "BTCUSDT-1m-2025-01-01.zip"
    venues.corrupt = {day: 1}  # one truncated body: refetched
    rc, rep = run(capsys, args(venues, store, cache, "--binance-data", "klines", "--binance-kind", "um"))
    assert rc == 0 and rep["binance_days_verified"] == 2
    assert venues.hits[f"/binance/data/futures/um/daily/klines/BTCUSDT/1m/{day}"] == 2
    venues.corrupt = {day: -1}  # always corrupt: that day fails, nothing corrupt is kept
    rc, rep = run(capsys, args(venues, LocalStore(tmp_path / "s2"), tmp_path / "c2", "--binance-data", "klines",
                               "--binance-kind", "um"))  # fmt: skip
    assert rc == 1 and "CHECKSUM" in json.dumps(rep["windows_failed"])
    venues.corrupt = {}
    rc, rep = run(capsys, args(venues, LocalStore(tmp_path / "s2"), tmp_path / "c2", "--binance-data", "klines",
                               "--binance-kind", "um"))  # fmt: skip
    assert rc == 0 and rep["binance_days_verified"] == 2
    assert files(LocalStore(tmp_path / "s2"), "imported/market-data/") == files(store, "imported/market-data/")


def test_a_day_not_published_yet_is_reported_missing(tmp_path, capsys, venues) -> None:
    venues.last_day_ms = US_FROM_MS
    rc, rep = run(capsys, args(venues, LocalStore(tmp_path / "s"), tmp_path / "c", "--binance-data", "klines",
                               "--binance-kind", "spot"))  # fmt: skip
    assert rc == 0 and rep["binance_days"] == 1 and rep["binance_days_missing"] == ["2025-01-01"]


def test_killed_mid_way_then_resumed_gives_the_clean_runs_bytes_rate_limited(tmp_path, capsys, venues) -> None:
    """SIGKILL a backfill mid-way (a subprocess at 8 requests/s), resume it in the same cache: the archive is the
    same, byte for byte, as an uninterrupted run's, and the resumed run asks only for what the first did not get.
    No two requests of one run arrive closer than the rate allows."""
    store, cache = LocalStore(tmp_path / "s"), tmp_path / "c"
    argv = args(venues, store, cache, "--binance-data", "klines", "--binance-kind", "spot")
    argv[argv.index("--rate") + 1] = "8"
    code = "import sys; from fusion.importers.backfill import backfill_main; sys.exit(backfill_main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(venues.times) < 14 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.02)
        assert p.poll() is None, "the backfill ended before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(30)
    first = list(venues.times)
    gaps = np.diff(first)
    assert 14 <= len(first) < 4 * N_WINDOWS and gaps.min() >= 0.8 / 8  # rate-limited: 8 requests/s at most
    assert not list(store.list("imported/"))  # killed before it wrote anything
    rc, rep = run(capsys, args(venues, store, cache, "--binance-data", "klines", "--binance-kind", "spot"))
    assert rc == 0 and rep["cache_hits"] >= len(first) - 1  # what the killed run got (but one in flight) is reused
    clean = LocalStore(tmp_path / "clean")
    rc, rep2 = run(capsys, args(venues, clean, tmp_path / "c2", "--binance-data", "klines", "--binance-kind", "spot"))
    assert rc == 0 and rep["network_requests"] + rep["cache_hits"] == rep2["network_requests"]
    assert files(store) == files(clean) and len(files(store)) > 0


def test_a_fixed_market_by_slug_is_one_window_from_gammas_metadata(tmp_path, capsys, venues) -> None:
    start, end = T0, T0 + 7200
    venues.add_fixed("will-btc-hold-95k-on-new-years-eve", start, end, yes_won=True)
    store = LocalStore(tmp_path / "s")
    rc, rep = run(capsys, args(venues, store, tmp_path / "c", "--binance-kind", "um",
                               market="NYE95K=slug:will-btc-hold-95k-on-new-years-eve@BTCUSDT"))  # fmt: skip
    assert rc == 0 and rep["windows_fetched"] == 1 and rep["states_written"] == 720
    st = load_market(store, "NYE95K", origin="imported", labels=False).states
    assert st.tick_ms[0] == start * 1000 and st.tick_ms[-1] == end * 1000 - 10_000
    assert set(st.raw[:, RAW_INDEX["pm_start_s"]].tolist()) == {start}
    assert set(st.raw[:, RAW_INDEX["pm_end_s"]].tolist()) == {end}
    assert set(st.slugs) == {"will-btc-hold-95k-on-new-years-eve"}
    up = (st.raw[:, RAW_INDEX["up_bid_px_0"]] + st.raw[:, RAW_INDEX["up_ask_px_0"]]) / 2
    want = np.clip(0.5 + 0.3 * np.sin((st.tick_ms // 60_000 * 60) / 3600.0), 0.02, 0.98).round(3)  # the Yes history
    assert np.allclose(up, want, atol=1e-9)
    assert np.isfinite(st.raw[:, RAW_INDEX["bn_last_px"]]).all()


def test_a_fixed_market_by_condition_id_within_from_to_keeps_its_window(tmp_path, capsys, venues) -> None:
    start, end = T0 + 600, T0 + 4200  # eventStartTime (startDate is a day earlier, when it was created)
    m = venues.add_fixed("btc-above-94k-jan-1-0000", start, end, yes_won=False, event_start=True)
    store = LocalStore(tmp_path / "s")
    argv = args(venues, store, tmp_path / "c", "--binance-data", "none", "--from", str((start + 1800) * 1000), "--to",
                str((start + 2400) * 1000), market=f"JAN1=cid:{m['conditionId']}@BTCUSDT")  # fmt: skip
    rc, rep = run(capsys, argv)
    assert rc == 0 and rep["states_written"] == 60
    st = load_market(store, "JAN1", origin="imported", labels=False).states
    assert st.tick_ms[0] == (start + 1800) * 1000 and st.tick_ms[-1] == (start + 2400) * 1000 - 10_000
    assert set(st.raw[:, RAW_INDEX["pm_start_s"]].tolist()) == {start}  # the market's window, not the range asked
    rc, rep = run(capsys, args(venues, LocalStore(tmp_path / "x"), tmp_path / "c3", market="X=slug:no-such@BTCUSDT"))
    assert rc == 1 and rep["windows_fetched"] == 0 and rep["windows_missing"] == ["X"]
