"""The synthetic driver as a pure generator: determinism, lead-lag, books, resolution, depth ids."""

from __future__ import annotations

import itertools
import math

import numpy as np
import orjson

from observer_svc.sim.core import BOut, POut
from observer_svc.sim.synthetic import SyntheticDriver

EPOCH = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a window start


def _encode(outs: list) -> list[bytes]:
    return [orjson.dumps(o.payload()) if isinstance(o, BOut) else o.encode() for o in outs]


def _run(d: SyntheticDriver, n: int) -> list[bytes]:
    frames: list[bytes] = []
    for _, outs in itertools.islice(d.steps(), n):
        frames += _encode(outs)
    return frames


def test_same_seed_same_frames_other_seed_differs() -> None:
    a = _run(SyntheticDriver(["BTC-15M", "ETH-15M"], seed=7, epoch_ms=EPOCH), 600)
    b = _run(SyntheticDriver(["BTC-15M", "ETH-15M"], seed=7, epoch_ms=EPOCH), 600)
    c = _run(SyntheticDriver(["BTC-15M", "ETH-15M"], seed=8, epoch_ms=EPOCH), 600)
    assert len(a) > 5000
    assert a == b
    assert a != c


def _series(lead_lag: bool, seed: int, steps: int = 4800) -> tuple[np.ndarray, np.ndarray]:
    """Per sim second: Binance price and the Up mid of the current window (its first 10 minutes)."""
    d = SyntheticDriver(["BTC-15M"], seed=seed, epoch_ms=EPOCH, lead_lag=lead_lag, lag_s=5.0)
    px, mid = [], []
    for t, _ in itertools.islice(d.steps(), steps):
        if t % 1000 == 0:
            w = next(w for w in d.windows() if w.start_ms <= t < w.end_ms)
            px.append(d.syms["BTCUSDT"].S)
            mid.append(d.up_price(w))
    return np.log(np.array(px)), np.array(mid)


def _lead_corr(lp: np.ndarray, mid: np.ndarray, lag: int = 5) -> tuple[float, float]:
    """corr(Binance return over [t-lag, t], Up mid change over [t, t+lag]) and the reverse-in-time one."""
    x = lp[lag:-lag] - lp[: -2 * lag]
    fut = mid[2 * lag :] - mid[lag:-lag]
    past = mid[lag:-lag] - mid[: -2 * lag]
    return float(np.corrcoef(x, fut)[0, 1]), float(np.corrcoef(x, past)[0, 1])


def test_lead_lag_present_and_absent_without_it() -> None:
    lead, past = _lead_corr(*_series(True, seed=3))
    noise, _ = _lead_corr(*_series(False, seed=3))
    assert lead > 0.5, lead
    assert lead > past + 0.3, (lead, past)  # Binance leads, not the other way round
    assert abs(noise) < 0.25, noise
    assert lead > noise + 0.4


def test_books_mirror_ticks_and_resolution() -> None:
    d = SyntheticDriver(["BTC-5M"], seed=5, epoch_ms=EPOCH)
    resolved, ticks, opens = [], [], {}
    for t, outs in itertools.islice(d.steps(), 3010):
        for w in d.windows():
            if w.start_ms <= t < w.end_ms and "open" in w.extra:
                opens[w.slug] = (w.extra["open"], w)
        for o in outs:
            if isinstance(o, POut):
                for e in o.events:
                    if e["event_type"] == "market_resolved":
                        resolved.append((t, e))
                    elif e["event_type"] == "tick_size_change":
                        ticks.append(e)
                    elif e["event_type"] == "price_change":
                        for ch in e["price_changes"]:
                            assert ch["side"] in ("BUY", "SELL")
                            assert float(ch["best_bid"]) < float(ch["best_ask"])
        if t == EPOCH + 150_000:  # mid-window: Down book is the mirror of Up
            w = next(w for w in d.windows() if w.start_ms <= t < w.end_ms)
            up, dn = d.book_event(w.up), d.book_event(w.down)
            assert up is not None and dn is not None
            up_bb, up_ba = max(float(x["price"]) for x in up["bids"]), min(float(x["price"]) for x in up["asks"])
            dn_bb, dn_ba = max(float(x["price"]) for x in dn["bids"]), min(float(x["price"]) for x in dn["asks"])
            assert math.isclose(dn_bb, 1 - up_ba) and math.isclose(dn_ba, 1 - up_bb)
            assert 1 <= round((up_ba - up_bb) / float(up["tick_size"])) <= 3
            # levels come worst first, as captured live
            assert [x["price"] for x in up["bids"]] == sorted((x["price"] for x in up["bids"]), key=float)
    assert len(resolved) == 1
    t_end, ev = resolved[0]
    first = d.wins[f"btc-updown-5m-{EPOCH // 1000}"]
    assert t_end == first.end_ms and ev["market"] == first.cid
    s_end = d.syms["BTCUSDT"].hist[-1 - (t - t_end) // 100]
    want_up = s_end >= opens[first.slug][0]
    assert ev["winning_outcome"] == ("Up" if want_up else "Down")
    assert ev["winning_asset_id"] == (first.up if want_up else first.down)
    # the final minute pushes the price towards 0/1: the finer tick is announced
    assert any(e["new_tick_size"] == "0.001" for e in ticks)


def test_depth_chain_and_snapshot_are_consistent() -> None:
    d = SyntheticDriver(["BTC-15M"], seed=2, epoch_ms=EPOCH)
    sim = d.syms["BTCUSDT"]
    snap = sim.snapshot(1000, futures=True)
    book = {"b": {p: q for p, q in snap["bids"]}, "a": {p: q for p, q in snap["asks"]}}
    prev_u = snap["lastUpdateId"]
    for _, outs in itertools.islice(d.steps(), 300):
        for o in outs:
            if isinstance(o, BOut) and o.stream == "btcusdt@depth@100ms":
                e = o.payload()
                assert e["pu"] == prev_u and e["U"] > prev_u and e["u"] >= e["U"]
                prev_u = e["u"]
                for side in ("b", "a"):
                    for p, q in e[side]:
                        if float(q) == 0:
                            book[side].pop(p, None)
                        else:
                            book[side][p] = q
            if isinstance(o, BOut) and o.stream == "btcusdt@bookTicker":
                assert o.payload()["u"] == prev_u
    snap2 = sim.snapshot(1000, futures=True)
    assert snap2["lastUpdateId"] == prev_u
    assert {p: q for p, q in snap2["bids"]} == book["b"]
    assert {p: q for p, q in snap2["asks"]} == book["a"]


def test_klines_rest_history_and_live_minutes() -> None:
    d = SyntheticDriver(["BTC-15M"], seed=2, epoch_ms=EPOCH)
    pushes = []
    for _, outs in itertools.islice(d.steps(), 1300):  # 130 s
        pushes += [o.payload() for o in outs if isinstance(o, BOut) and o.stream.endswith("@kline_1m")]
    assert 60 <= len(pushes) <= 70  # every 2 s
    closed = [k for k in pushes if k["k"]["x"]]
    assert [k["k"]["t"] for k in closed] == [EPOCH, EPOCH + 60_000]
    rows = d.klines("BTCUSDT", 65, None, None)
    assert len(rows) == 65 and rows[-1][0] == EPOCH + 120_000  # the open minute is last
    assert [r[0] for r in rows] == list(range(EPOCH - 62 * 60_000, EPOCH + 180_000, 60_000))
    assert rows[-2][4] == closed[-1]["k"]["c"] and isinstance(rows[-2][8], int)
    assert all(isinstance(r[1], str) and isinstance(r[6], int) for r in rows)
