"""Issue 14: ``fusion import`` of every supported layout from the fixtures in tests/fixtures/imports (written by
the project in those layouts), read back as the observer, archiver and labeler would have written it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archiver_svc.reader import load_market
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import decode_object, encode_object, object_key, parse_key
from common.features import market_features
from common.schema import (
    DERIVED_BINANCE_BOOK,
    DERIVED_POLY_BOOK,
    ORIGIN_IMPORTED,
    POLY_BOOK_EMPTY,
    RAW_INDEX,
    decode_state,
)
from common.settings import get_settings
from common.store import LocalStore
from fusion.importers.cli import import_main
from labeler_svc.batch import final_mask, label_archive

FIX = Path(__file__).parents[1] / "fixtures" / "imports"
M = "BTC-15M"
T0 = 1_767_225_600_000


def run_import(capsys: pytest.CaptureFixture[str], store: LocalStore, *args: str) -> tuple[int, list[dict]]:
    rc = import_main([*args, "--store-url", store.url, "--json"])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_generic_csv_and_parquet_give_the_same_archive(tmp_path, capsys) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    rc, [rep] = run_import(capsys, a, str(FIX / "generic.csv"), "--market", M)
    rc2, [rep2] = run_import(capsys, b, str(FIX / "generic.parquet"), "--market", M)
    assert rc == rc2 == 0
    assert rep["rows_read"] == 1082 and rep["states_written"] == 1080 and rep["windows"] == 12
    assert rep["dropped"] == {"bad_time_or_window": 1, "duplicate_tick": 1}
    assert rep["dropped_rows"] == {"bad_time_or_window": [400], "duplicate_tick": [300]}  # where to look
    assert rep["fixed"] == {"crossed_book": 1, "placeholder_book": 1, "zero_price": 36, "out_of_order": 1}
    assert rep["tick_ms"] == 10_000 and rep["timezone_shift_h"] == 0
    ka = sorted(o.key for o in a.list("imported/market-data/"))
    assert ka == sorted(o.key for o in b.list("imported/market-data/"))
    assert all(a.get(k) == b.get(k) for k in ka)  # byte for byte
    assert not list(a.list("market-data/")) and not list(a.list("labels/"))  # nothing recorded was touched


def test_imported_states_are_what_the_observer_would_have_written(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    run_import(capsys, store, str(FIX / "generic.csv"), "--market", M)
    s = get_settings()
    for o in store.list("imported/market-data/"):
        kind, market, ws = parse_key(o.key[len("imported/") :])
        assert (kind, market, ws % (s.archive_window_s * 1000)) == ("states", M, 0)
        obj = decode_object(store.get(o.key), o.key[len("imported/") :])
        first = decode_state(obj.payloads[0])
        assert obj.ids[0] == f"{first.tick_ms}-0" and first.version == 2 and first.pm is not None
    md = load_market(store, M, origin="imported")
    assert load_market(store, M).states.tick_ms.size == 0  # the recorded archive is empty
    st = md.states
    assert len(st) == 1080 and np.all(np.diff(st.tick_ms) == 10_000)
    assert np.array_equal(st.features, market_features(st.raw, st.tick_ms))  # the one feature function
    assert np.all(st.flags & ORIGIN_IMPORTED) and not np.any(st.flags & DERIVED_POLY_BOOK)
    assert np.all(st.flags & DERIVED_BINANCE_BOOK)  # bid/ask from a last price
    # the labeler's own function, on the rows whose future is in the data
    lb = md.labels
    final = final_mask(st, s)
    want = label_archive(st, s)
    assert lb is not None and np.array_equal(lb.tick_ms, st.tick_ms[final])
    assert np.array_equal(lb.rewards, want.rewards[final], equal_nan=True) and np.array_equal(
        lb.valid, want.valid[final]
    )
    # the outcome of window k reaches the states of window k+1 (settlement labels)
    prev = st.raw[:, RAW_INDEX["pm_prev_settle_up"]]
    assert np.isnan(prev[st.tick_ms < T0 + 900_000]).all() and np.isfinite(prev[st.tick_ms >= T0 + 900_000]).all()
    # the bad rows: the crossed and placeholder books and the empty book near expiry are absent, not prices
    up_bid = st.raw[:, RAW_INDEX["up_bid_px_0"]]
    assert np.isnan(up_bid).sum() == 2 + 36 and not np.any(up_bid == 0.0)


def test_import_never_overwrites_recorded_states_and_both_prefers_them(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    w = get_settings().archive_window_s * 1000
    pairs = synth_payloads(M, T0, 60, tick_ms=10_000)  # recorded: the first 10 minutes, same tick grid
    key = object_key("states", M, T0)
    store.put(key, encode_object("states", M, T0, w, dict(pairs)))
    before = store.get(key)
    rc, _ = run_import(capsys, store, str(FIX / "generic.csv"), "--market", M)
    assert rc == 0 and store.get(key) == before and [o.key for o in store.list("market-data/")] == [key]
    rec = load_market(store, M, labels=False)
    both = load_market(store, M, labels=False, origin="both")
    assert len(rec.states) == 60 and len(both.states) == 1080
    head = both.states.tick_ms < T0 + 600_000
    assert np.array_equal(both.states.raw[head], rec.states.raw, equal_nan=True)  # recorded wins the shared ticks
    assert not np.any(both.states.flags[head] & ORIGIN_IMPORTED) and np.all(both.states.flags[~head] & ORIGIN_IMPORTED)
    # importing again adds nothing and rewrites identical bytes
    snap = {o.key: store.get(o.key) for o in store.list("imported/market-data/")}
    rc, [rep] = run_import(capsys, store, str(FIX / "generic.csv"), "--market", M)
    assert rep["dropped"]["already_imported"] == 1080
    assert snap == {o.key: store.get(o.key) for o in store.list("imported/market-data/")}


def test_local_time_rows_are_shifted_into_their_windows_not_written_empty(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / "tob.csv"), "--market", M, "--layout", "tob-csv")
    assert rc == 0 and rep["timezone_shift_h"] == 1 and rep["states_written"] == 1020
    assert any("another timezone" in n for n in rep["notes"])
    st = load_market(store, M, origin="imported").states
    assert not np.any(st.flags & POLY_BOOK_EMPTY)
    start = st.raw[:, RAW_INDEX["pm_start_s"]] * 1000
    assert np.all((st.tick_ms >= start) & (st.tick_ms < start + 900_000))


def test_rows_outside_their_windows_are_dropped_and_reported(tmp_path, capsys) -> None:
    """Times off by 5.5 h: no whole-hour shift explains it; nothing is written, exit 1, the report says why."""
    from datetime import datetime, timedelta

    src = (FIX / "generic.csv").read_text().splitlines()
    rows = [src[0]]
    for ln in src[1:]:
        parts = ln.split(",")
        try:
            t = datetime.fromisoformat(parts[0].replace("Z", "+00:00")) + timedelta(hours=5, minutes=30)
            parts[0] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
        rows.append(",".join(parts))
    f = tmp_path / "off.csv"
    f.write_text("\n".join(rows) + "\n")
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(f), "--market", M)
    assert rc == 1 and rep["states_written"] == 0 and rep["dropped"]["outside_window"] >= 1000
    assert any("outside their windows" in n for n in rep["notes"])
    assert not list(store.list(""))


@pytest.mark.parametrize("name", ["poller.db", "poller.csv"])
def test_per_minute_poller_of_hourly_markets(tmp_path, capsys, name) -> None:
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / name), "--market", "BTC-1H", "--layout", "poller")
    assert rc == 0 and rep["windows"] == 4 and rep["states_written"] == 236 and rep["tick_ms"] == 60_000
    # rows at :09 show at the next minute's tick (never earlier); each window's last one would be its end
    assert rep["dropped"] == {"at_window_end": 4}
    assert any("shorter than the data's tick" in n for n in rep["notes"])  # 30 s labels at a 60 s tick
    st = load_market(store, "BTC-1H", origin="imported", labels=False).states
    start = st.raw[:, RAW_INDEX["pm_start_s"]]
    assert set(np.unique(start).astype(int) % 3600) == {0}  # hourly windows read from "January 1, 8AM ET"
    assert int(start[0]) * 1000 == T0 + 13 * 3_600_000  # 8 AM New York (EST) = 13:00 UTC
    assert np.all(st.flags & DERIVED_POLY_BOOK)  # the Down book is derived from the Up token's
    up_ask, dn_bid = st.raw[:, RAW_INDEX["up_ask_px_0"]], st.raw[:, RAW_INDEX["dn_bid_px_0"]]
    assert np.allclose(dn_bid, 1 - up_ask)
    assert np.isfinite(st.raw[st.tick_ms >= T0 + 14 * 3_600_000, RAW_INDEX["pm_prev_settle_up"]]).all()


def test_binance_daily_dumps_give_the_binance_side(tmp_path, capsys) -> None:
    """Spot aggTrades with microsecond times (2025 on) and USD-M klines with a header line, mixed."""
    from fusion.importers.binance import read_binance

    bn = read_binance([FIX / "spot-aggTrades.zip", FIX / "um-klines.zip"])
    assert bn.trade_ms[0] // 10**12 == 1 and bn.bar_ms[0] == T0 - 3_600_000  # us -> ms; header skipped
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / "poller.csv"), "--market", "BTC-1H", "--layout", "poller",
                           "--binance", str(FIX / "spot-aggTrades.zip"), str(FIX / "um-klines.zip"))  # fmt: skip
    assert rc == 0 and rep["fidelity"]["bn_net_10s"] == "recorded" and rep["fidelity"]["bn_vol_24h_per_h"] == "recorded"
    rc, [rep] = run_import(capsys, LocalStore(tmp_path / "g"), str(FIX / "generic.csv"), "--market", M,
                           "--binance", str(FIX / "spot-aggTrades.zip"))  # fmt: skip
    st = load_market(LocalStore(tmp_path / "g"), M, origin="imported", labels=False).states
    i = 200
    t = int(st.tick_ms[i])
    j = int(np.searchsorted(bn.trade_ms, t, "right")) - 1
    assert rep["fidelity"]["bn_trades_10s"] == "recorded"
    assert st.raw[i, RAW_INDEX["bn_trades_10s"]] == np.sum((bn.trade_ms > t - 10_000) & (bn.trade_ms <= t))
    assert np.isfinite(st.raw[i, RAW_INDEX["bn_last_px"]]) and j >= 0


def test_hourly_market_names_are_placed_in_the_right_year() -> None:
    """Names carry no year: a "December 31, 7PM ET" market polled on January 1 UTC is 2025's, not 2026's."""
    from fusion.importers.adapters import window_of_name

    assert window_of_name("Bitcoin Up or Down - December 31, 7PM ET", T0) == (T0, T0 + 3_600_000)
    assert window_of_name("Bitcoin Up or Down - July 21, 12AM ET", T0 + 200 * 86_400_000)[0] % 3_600_000 == 0
    assert window_of_name("Bitcoin price on some day", T0) is None


def test_several_files_are_one_recording(tmp_path, capsys) -> None:
    """Daily files: windows and labels span the files, as one import of their concatenation."""
    lines = (FIX / "generic.csv").read_text().splitlines()
    (tmp_path / "a.csv").write_text("\n".join(lines[:500]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([lines[0], *lines[500:]]) + "\n")
    one, two = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    run_import(capsys, one, str(FIX / "generic.csv"), "--market", M)
    rc, [rep] = run_import(capsys, two, str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--market", M)
    assert rc == 0 and rep["states_written"] == 1080 and any("rows per file" in n for n in rep["notes"])
    keys = sorted(o.key for o in one.list("imported/") if "/manifests/" not in o.key)
    assert keys == sorted(o.key for o in two.list("imported/") if "/manifests/" not in o.key)
    assert all(one.get(k) == two.get(k) for k in keys)  # states and labels byte for byte


def test_import_into_s3_reads_back_the_same(tmp_path, s3_store) -> None:
    """The imported/ view works on S3 (moto server) as on a directory."""
    from fusion.importers.layout import read_table
    from fusion.importers.write import prepare, write

    s = get_settings()
    states, rep, cols = prepare(read_table(FIX / "generic.csv"), M, s)
    write(s3_store, M, states, cols, rep, s)
    local = LocalStore(tmp_path / "l")
    states2, rep2, cols2 = prepare(read_table(FIX / "generic.csv"), M, s)
    write(local, M, states2, cols2, rep2, s)
    keys = sorted(o.key for o in s3_store.list("imported/market-data/"))
    assert keys == sorted(o.key for o in local.list("imported/market-data/")) and keys
    assert all(s3_store.get(k) == local.get(k) for k in keys)
    md = load_market(s3_store, M, origin="both")
    assert len(md.states) == 1080 and md.labels is not None and len(md.labels) == rep.labels_written


def test_klines_only_give_a_derived_binance_price_from_closed_bars(tmp_path, capsys) -> None:
    from fusion.importers.binance import read_binance

    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / "tob.csv"), "--market", M, "--layout", "tob-csv",
                           "--binance", str(FIX / "um-klines.zip"))  # fmt: skip
    assert rc == 0 and rep["fidelity"]["bn_last_px"] == "derived" and rep["fidelity"]["bn_vol_1h"] == "recorded"
    st = load_market(store, M, origin="imported", labels=False).states
    bn = read_binance([FIX / "um-klines.zip"])
    closed = np.searchsorted(bn.bar_ms + 60_000, st.tick_ms, "right") - 1  # never the bar still open
    assert np.array_equal(st.raw[:, RAW_INDEX["bn_last_px"]], bn.bar_close[closed])
    assert np.all(st.flags & DERIVED_BINANCE_BOOK)


def test_timezone_is_detected_per_file(tmp_path, capsys) -> None:
    """Two daily files, only one written in local time: each is judged on its own (found on real files)."""
    lines = (FIX / "tob.csv").read_text().splitlines()
    fixed = [lines[0]]
    for ln in lines[1:]:  # the same rows with Timestamp in UTC
        ts, rest = ln.split(",", 1)
        h = int(ts[11:13]) - 1
        fixed.append(f"{ts[:11]}{h:02d}{ts[13:]},{rest}")
    (tmp_path / "utc.csv").write_text("\n".join(fixed) + "\n")
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / "tob.csv"), str(tmp_path / "utc.csv"), "--market", M,
                           "--layout", "tob-csv")  # fmt: skip
    assert rc == 0 and rep["fixed"]["timezone_shift"] == 1020 and "outside_window" not in rep["dropped"]
    assert rep["dropped"]["duplicate_tick"] == 1020  # the same rows twice, once shifted back
    assert [n for n in rep["notes"] if "another timezone" in n][0].startswith("tob.csv:")


def test_dry_run_reports_and_writes_nothing(tmp_path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    rc, [rep] = run_import(capsys, store, str(FIX / "generic.parquet"), "--market", M, "--dry-run")
    assert rc == 0 and rep["states_written"] == 1080 and rep["objects_written"] == 0 and not list(store.list(""))
