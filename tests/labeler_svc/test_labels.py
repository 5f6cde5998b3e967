from __future__ import annotations

import numpy as np
import pytest

from common.fees import taker_fee
from common.schema import (
    EXIT_FUTURE_BID,
    EXIT_INVALID,
    EXIT_SETTLEMENT,
    RAW_INDEX,
    STALE_BINANCE,
    STALE_POLY,
    StateColumns,
    decode_label,
    encode_label,
)
from labeler_svc.labels import label_columns, ready_mask, ready_prefix
from labeler_svc.wire import encode_label_rows
from tests.labeler_svc.synth import MARKET, T0, TICK, WINDOW, columns, make_states

KW = {"tolerance_ms": 2_000, "fee_rate": 0.07, "fee_exponent": 1.0}
H = (30, 60, 300)


def px(cols: StateColumns, i: int, name: str) -> float:
    return float(cols.raw[i, RAW_INDEX[name]])


def idx(cols: StateColumns, tick: int) -> int:
    j = int(np.searchsorted(cols.tick_ms, tick))
    assert cols.tick_ms[j] == tick
    return j


def test_ordinary_horizon_exit_fees_exact() -> None:
    cols = columns(make_states(1000))
    lc = label_columns(cols, H, **KW)
    i = 10
    for k, h in enumerate(H):
        j = idx(cols, int(cols.tick_ms[i]) + h * 1000)
        assert lc.exit_kind[i, k] == EXIT_FUTURE_BID and lc.valid[i, k] == 1
        for a, tok in ((1, "up"), (2, "dn")):
            ask = px(cols, i, f"{tok}_ask_px_0")
            bid = px(cols, j, f"{tok}_bid_px_0")
            sh = 1.0 / ask
            exp = sh * bid - 0.07 * sh * bid * (1 - bid) - 1.0 - 0.07 * sh * ask * (1 - ask)
            assert exp == pytest.approx(sh * bid - taker_fee(sh, bid) - 1 - taker_fee(sh, ask), abs=1e-15)
            assert lc.rewards[i, k, a] == np.float32(exp)
        assert lc.rewards[i, k, 0] == 0.0
        assert lc.best[i, k] == int(np.argmax(lc.rewards[i, k]))
    # fees always cost: with a zero fee rate every reward is higher
    free = label_columns(cols, H, tolerance_ms=2_000, fee_rate=0.0, fee_exponent=1.0)
    ok = lc.valid.astype(bool)
    assert np.all(free.rewards[..., 1:][ok] > lc.rewards[..., 1:][ok])


def test_settlement_from_prev_after_rollover() -> None:
    cols = columns(make_states(2400, settle_delay_ms=20_000))  # 20 min: one rollover at 15 min
    end = T0 + WINDOW
    i = idx(cols, end - 10_000)  # 10 s before the end: every horizon crosses it
    lc = label_columns(cols, H, **KW)
    src = idx(cols, end + 20_000)
    settle = px(cols, src, "pm_prev_settle_up")
    assert settle in (0.0, 1.0)
    assert np.isnan(px(cols, src - 1, "pm_prev_settle_up"))
    for k in range(3):
        assert lc.exit_kind[i, k] == EXIT_SETTLEMENT and lc.valid[i, k] == 1
        for a, tok, val in ((1, "up", settle), (2, "dn", 1 - settle)):
            ask = px(cols, i, f"{tok}_ask_px_0")
            sh = 1 / ask
            assert lc.rewards[i, k, a] == np.float32(sh * val - 1 - 0.07 * sh * ask * (1 - ask))
    # a state 40 s before the end: 30 s exits at the bid, 60 s and 300 s at settlement
    i2 = idx(cols, end - 40_000)
    assert list(lc.exit_kind[i2]) == [EXIT_FUTURE_BID, EXIT_SETTLEMENT, EXIT_SETTLEMENT]
    # settlement known only 20 s after the end: with a 10 s wait it does not count
    lw = label_columns(cols, H, settle_wait_ms=10_000, **KW)
    assert list(lw.exit_kind[i]) == [EXIT_INVALID] * 3 and list(lw.best[i]) == [-1] * 3
    assert np.isnan(lw.rewards[i, :, 1:]).all()


def test_settlement_from_same_window_and_unknown() -> None:
    states = make_states(1900, settle_delay_ms=10**9)  # never via pm_prev
    end = T0 + WINDOW
    cols = columns(states)
    i = idx(cols, end - 5_000)
    lc = label_columns(cols, H, **KW)
    assert list(lc.exit_kind[i]) == [EXIT_INVALID] * 3  # settlement never known: invalid, not guessed
    # the observer had not rolled yet at end + 1 s and saw the resolution: same window, pm_settle_up
    s = next(s for s in states if s.tick_ms == end + 1_000)
    s.raw[RAW_INDEX["pm_end_s"]] = end / 1000
    s.raw[RAW_INDEX["pm_settle_up"]] = 1.0
    cols = columns(states)
    lc = label_columns(cols, H, **KW)
    assert list(lc.exit_kind[i]) == [EXIT_SETTLEMENT] * 3
    ask = px(cols, i, "up_ask_px_0")
    assert lc.rewards[i, 0, 1] == np.float32(1 / ask - 1 - 0.07 / ask * ask * (1 - ask))
    dn_ask = px(cols, i, "dn_ask_px_0")
    assert lc.rewards[i, 0, 2] == np.float32(-1 - 0.07 * (1 - dn_ask))
    assert lc.best[i, 0] == 1
    # a state after the end (entry into a finished market) is invalid
    j = idx(cols, end + 1_000)
    assert list(lc.valid[j]) == [0, 0, 0]


def test_gap_and_tolerance() -> None:
    base = T0
    # drop the states at t+30 s and +/- 1 s around it for i=0; t+60 s alone for another case
    drop_30 = tuple(range(58, 63))  # ticks 29.0 .. 31.0 s: nearest is 28.5 / 31.5 s (1.5 s away)
    cols = columns(make_states(800, drop=drop_30))
    lc = label_columns(cols, H, **KW)
    i = idx(cols, base)
    assert lc.valid[i, 0] == 1 and lc.exit_kind[i, 0] == EXIT_FUTURE_BID  # within 2 s tolerance
    j_fut = idx(cols, base + 31_500)  # tie between 28.5 and 31.5: the later one
    bid = px(cols, j_fut, "up_bid_px_0")
    sh = 1 / px(cols, i, "up_ask_px_0")
    ask = px(cols, i, "up_ask_px_0")
    assert lc.rewards[i, 0, 1] == np.float32(sh * bid - 0.07 * sh * bid * (1 - bid) - 1 - 0.07 * sh * ask * (1 - ask))
    strict = label_columns(cols, H, tolerance_ms=1_000, fee_rate=0.07, fee_exponent=1.0)
    assert strict.valid[i, 0] == 0 and strict.exit_kind[i, 0] == EXIT_INVALID and strict.best[i, 0] == -1
    assert strict.valid[i, 1] == 1
    # a long gap: no state within tolerance -> invalid
    cols = columns(make_states(800, drop=tuple(range(100, 200))))
    lc = label_columns(cols, H, **KW)
    i = idx(cols, base + 90 * TICK)  # +30 s = index 150: mid-gap (nearest states 25 s away)
    assert lc.valid[i, 0] == 0 and lc.valid[i, 1] == 1
    # the end of the data: futures beyond it are invalid
    assert lc.valid[-1].sum() == 0


def test_stale_future_and_stale_entry() -> None:
    cols = columns(make_states(800, stale=(60, 5)))
    lc = label_columns(cols, H, **KW)
    assert lc.valid[0, 0] == 0  # future (index 60) stale
    assert lc.valid[0, 1] == 1
    assert list(lc.valid[5]) == [0, 0, 0]  # stale at t
    # a Binance-only staleness does not invalidate a Polymarket label
    cols.flags[1] = STALE_BINANCE
    assert label_columns(cols, H, **KW).valid[1].all()
    cols.flags[1] = STALE_POLY
    assert label_columns(cols, H, **KW).valid[1].sum() == 0


def test_missing_book_sides() -> None:
    cols = columns(make_states(800))
    cols.raw[3, RAW_INDEX["dn_ask_px_0"]] = np.nan
    cols.raw[64, RAW_INDEX["up_bid_px_0"]] = np.nan  # the 30 s future of state 4
    lc = label_columns(cols, H, **KW)
    assert list(lc.valid[3]) == [0, 0, 0]
    assert lc.valid[4, 0] == 0 and lc.valid[4, 1] == 1


def test_unsorted_rejected() -> None:
    cols = columns(make_states(10))
    cols.tick_ms = cols.tick_ms[::-1].copy()
    with pytest.raises(ValueError):
        label_columns(cols, H, **KW)


def _prefix(cols: StateColumns, n: int) -> StateColumns:
    return StateColumns(cols.tick_ms[:n], cols.raw[:n], cols.features[:n], cols.flags[:n], cols.slugs[:n])


@pytest.mark.parametrize("seed", [1, 2])
def test_ready_labels_are_final(seed: int) -> None:
    """A label that ready_mask calls final on a prefix equals the label on the whole data."""
    rng = np.random.default_rng(seed)
    drop = tuple(int(x) for x in rng.choice(4000, 200, replace=False))
    stale = tuple(int(x) for x in rng.choice(4000, 50, replace=False))
    cols = columns(make_states(4000, seed=seed, drop=drop, stale=stale, settle_delay_ms=30_000))
    wait = 60_000
    full = label_columns(cols, H, settle_wait_ms=wait, **KW)
    assert (full.exit_kind == EXIT_SETTLEMENT).sum() > 100 and (full.exit_kind == EXIT_INVALID).sum() > 100
    seen_unready = False
    for cut in sorted(int(c) for c in rng.integers(1, len(cols), 25)):
        part = _prefix(cols, cut)
        m = ready_mask(part, H, newest_tick_ms=int(part.tick_ms[-1]), settle_wait_ms=wait)
        seen_unready |= not m.all()
        lp = label_columns(part, H, settle_wait_ms=wait, **KW)
        for name in ("rewards", "best", "valid", "exit_kind"):
            a, b = getattr(lp, name)[m], getattr(full, name)[:cut][m]
            assert a.tobytes() == b.tobytes(), name
        n = ready_prefix(part, H, newest_tick_ms=int(part.tick_ms[-1]), settle_wait_ms=wait)
        assert m[:n].all() and (n == cut or not m[n])
    assert seen_unready


def test_bulk_encoder_matches_encode_label() -> None:
    cols = columns(make_states(700, stale=(3,)))
    lc = label_columns(cols, H, **KW)
    rows = encode_label_rows(MARKET, lc)
    assert len(rows) == len(lc)
    for i in (0, 3, 100, 699):
        assert rows[i] == encode_label(lc.row(i, MARKET))
        d = decode_label(rows[i])
        assert d.tick_ms == lc.tick_ms[i] and d.rewards.tobytes() == lc.rewards[i].tobytes()
    # small ticks (msgpack packs them shorter) take the exact path
    lc.tick_ms = np.arange(len(lc), dtype=np.int64) * 500
    rows = encode_label_rows(MARKET, lc)
    assert rows[5] == encode_label(lc.row(5, MARKET))
