"""Paper execution: book walking, partial fills, exact fees, latency, settlement, risk limits."""

from __future__ import annotations

import math

import pytest

from common.fees import fee_per_share, taker_fee
from common.policy import BUY_DOWN, BUY_UP, HOLD
from common.schema import PM_RESOLVED
from tests.trader_svc.helpers import T0, raw_book
from trader_svc.paper import PaperConfig, PaperEngine, walk_buy, walk_sell

END = T0 / 1000 + 900
M = "BTC-15M"


def trading(recs):
    """Fills and refusals (without the engine's ``day`` / ``kill`` risk records)."""
    return [r for r in recs if r["type"] not in ("day", "kill")]


def fills(recs, kind=None):
    return [r for r in recs if r["type"] == "fill" and (kind is None or r["kind"] == kind)]


def test_walk_buy_levels_and_exact_fee() -> None:
    w = walk_buy([(0.50, 100.0), (0.52, 100.0), (0.55, 1000.0)], 100.0, 0.07, 1.0)
    s2 = 50.0 / 0.52
    assert w.shares == pytest.approx(100.0 + s2, abs=1e-12)
    assert w.notional == pytest.approx(100.0, abs=1e-12)
    assert w.levels == 2
    assert w.fee == pytest.approx(taker_fee(100.0, 0.50) + taker_fee(s2, 0.52), abs=1e-12)
    assert w.fee == pytest.approx(0.07 * (100 * 0.25 + s2 * 0.52 * 0.48), abs=1e-12)


def test_walk_sell_partial_when_depth_short() -> None:
    w = walk_sell([(0.60, 150.0), (0.58, 20.0)], 200.0, 0.07, 1.0)
    assert w.shares == 170.0 and w.levels == 2
    assert w.notional == pytest.approx(150 * 0.60 + 20 * 0.58)
    assert w.fee == pytest.approx(taker_fee(150.0, 0.60) + taker_fee(20.0, 0.58))


def test_open_spends_position_usd_fee_on_top_then_close() -> None:
    eng = PaperEngine(PaperConfig(position_usd=100.0))
    raw = raw_book(up_asks=[(0.50, 100), (0.52, 100), (0.55, 1000)], up_bids=[(0.48, 500)], dn_asks=[(0.53, 500)])
    t = T0 + 60_000
    assert trading(eng.on_state(M, t, raw)) == []
    (op,) = fills(eng.decide(M, t, BUY_UP, raw))
    fee = taker_fee(100.0, 0.50) + taker_fee(50 / 0.52, 0.52)
    assert op["kind"] == "open" and op["side"] == "up" and not op["partial"]
    assert op["notional"] == pytest.approx(100.0) and op["fee"] == pytest.approx(fee)
    assert op["cash"] == pytest.approx(-(100.0 + fee))
    pos = eng.pos[M]
    assert pos.cost == pytest.approx(100.0 + fee) and pos.window_end_s == END
    assert pos.mark == pytest.approx(pos.shares * (0.48 - fee_per_share(0.48)))  # marked on the fill's state
    # holding Up + BUY_UP is a no-op by the contract
    assert eng.decide(M, t, BUY_UP, raw) == [] and eng.decide(M, t, HOLD, raw) == []
    # mark at the best bid net of the fee per share; the feature is unrealised / cost
    raw2 = raw_book(up_bids=[(0.60, 1000)], up_asks=[(0.62, 10)])
    eng.on_state(M, t + 500, raw2)
    mark = pos.shares * (0.60 - fee_per_share(0.60))
    assert pos.mark == pytest.approx(mark)
    has, side, frac = eng.agent_features([M, "OTHER"])
    assert list(has) == [1.0, 0.0] and list(side) == [1.0, 0.0]
    assert frac[0] == pytest.approx((mark - pos.cost) / pos.cost)
    # close: BUY_DOWN while holding Up sells the Up shares at the Up bids
    (cl,) = fills(eng.decide(M, t + 500, BUY_DOWN, raw2))
    proceeds = pos.shares * 0.60 - taker_fee(pos.shares, 0.60)
    assert cl["kind"] == "close" and cl["realised"] == pytest.approx(proceeds - (100.0 + fee))
    assert M not in eng.pos and eng.totals.realised == pytest.approx(cl["realised"])
    assert eng.totals.fees == pytest.approx(fee + taker_fee(op["shares"], 0.60))


def test_partial_open_and_partial_close() -> None:
    eng = PaperEngine(PaperConfig(position_usd=100.0))
    raw = raw_book(dn_asks=[(0.5, 50), (0.6, 20)])
    (op,) = fills(eng.decide(M, T0, BUY_DOWN, raw))
    assert op["partial"] and op["shares"] == 70 and op["notional"] == pytest.approx(37.0) and op["side"] == "down"
    cost = 37.0 + taker_fee(50, 0.5) + taker_fee(20, 0.6)
    assert eng.pos[M].cost == pytest.approx(cost)
    # close against a thin Down bid: 30 of 70 shares sell, the rest stays open at pro-rata cost
    raw2 = raw_book(dn_bids=[(0.7, 30)])
    (cl,) = fills(eng.decide(M, T0 + 500, BUY_UP, raw2))
    assert cl["partial"] and cl["shares"] == 30
    assert cl["realised"] == pytest.approx(30 * 0.7 - taker_fee(30, 0.7) - cost * 30 / 70)
    assert eng.pos[M].shares == pytest.approx(40) and eng.pos[M].cost == pytest.approx(cost * 40 / 70)
    assert eng.totals.partial_fills == 2


def test_refusals_empty_book_and_ended_window() -> None:
    eng = PaperEngine(PaperConfig())
    (r1,) = eng.decide(M, T0, BUY_UP, raw_book())
    assert r1["type"] == "refused" and r1["reason"] == "no ask"
    (r2,) = eng.decide(M, int(END * 1000), BUY_UP, raw_book(up_asks=[(0.5, 1000)]))
    assert r2["reason"] == "no open Polymarket window"
    (r3,) = eng.decide(M, T0, BUY_UP, raw_book(up_asks=[(0.5, 1000)]), flags=PM_RESOLVED)
    assert "flags" in r3["reason"] and not eng.pos


def test_latency_fills_against_the_later_state() -> None:
    eng = PaperEngine(PaperConfig(position_usd=10.0, latency_ms=1000))
    assert eng.decide(M, T0, BUY_UP, raw_book(up_asks=[(0.40, 1000)])) == []
    assert trading(eng.on_state(M, T0 + 500, raw_book(up_asks=[(0.45, 1000)]))) == []  # not due yet
    # a second order while one is in flight is refused
    (rf,) = eng.decide(M, T0 + 500, BUY_DOWN, raw_book(dn_asks=[(0.5, 1000)]))
    assert rf["reason"] == "order in flight"
    (op,) = fills(eng.on_state(M, T0 + 1000, raw_book(up_asks=[(0.50, 1000)])))
    assert op["tick"] == T0 and op["fill_tick"] == T0 + 1000 and op["avg_px"] == pytest.approx(0.50)
    assert op["shares"] == pytest.approx(20.0)


def test_settlement_same_window_and_after_rollover() -> None:
    eng = PaperEngine(PaperConfig(position_usd=10.0))
    eng.decide(M, T0, BUY_UP, raw_book(up_asks=[(0.5, 1000)]))
    eng.decide("ETH-15M", T0, BUY_DOWN, raw_book(dn_asks=[(0.25, 1000)]))
    up_cost, dn_cost = eng.pos[M].cost, eng.pos["ETH-15M"].cost
    # Up resolves in its own window's state: 20 shares pay 1 each, no fee
    (s1,) = fills(eng.on_state(M, int(END * 1000) + 2000, raw_book(pm_settle_up=1.0)), "settle")
    assert s1["realised"] == pytest.approx(20.0 - up_cost) and s1["fee"] == 0.0
    # Down: the next window's state carries the previous window's resolution; not known yet -> waits
    nxt = {"start_s": END, "end_s": END + 900, "pm_prev_end_s": END}
    assert eng.on_state("ETH-15M", int(END * 1000) + 500, raw_book(**nxt)) == []
    (rf,) = eng.decide("ETH-15M", int(END * 1000) + 500, BUY_UP, raw_book(dn_bids=[(0.9, 1000)], **nxt))
    assert rf["reason"] == "window ended: awaiting settlement"
    (s2,) = fills(eng.on_state("ETH-15M", int(END * 1000) + 5000, raw_book(pm_prev_settle_up=0.0, **nxt)))
    assert s2["kind"] == "settle" and s2["side"] == "down"
    assert s2["realised"] == pytest.approx(40.0 - dn_cost)
    assert not eng.pos and eng.totals.settlements == 2
    assert eng.totals.realised == pytest.approx(60.0 - up_cost - dn_cost)


def test_kill_switch_trips_on_daily_loss_blocks_opens_allows_closes_resets_next_day() -> None:
    eng = PaperEngine(PaperConfig(position_usd=100.0, max_daily_loss_usd=30.0))
    eng.on_state(M, T0, raw_book(up_asks=[(0.5, 1000)]))
    eng.decide(M, T0, BUY_UP, raw_book(up_asks=[(0.5, 1000)]))
    assert not eng.killed
    eng.on_state(M, T0 + 500, raw_book(up_bids=[(0.3, 1000)]))  # mark: 200 * (0.3 - fee) vs cost ~101.75
    assert eng.day_pnl() < -30 and eng.killed and eng.kill_trips == 1
    (rf,) = eng.decide("ETH-15M", T0 + 500, BUY_UP, raw_book(up_asks=[(0.5, 1000)]))
    assert rf["type"] == "refused" and "kill switch" in rf["reason"]
    (cl,) = fills(eng.decide(M, T0 + 500, BUY_DOWN, raw_book(up_bids=[(0.3, 1000)])))  # closing still works
    assert cl["kind"] == "close" and not eng.pos
    assert eng.snapshot()["kill_switch"] is True
    # next UTC day: the switch resets, day PnL restarts from the current equity
    nxt = T0 + 86_400_000
    raw = raw_book(up_asks=[(0.5, 1000)], start_s=nxt / 1000, end_s=nxt / 1000 + 900)
    eng.on_state(M, nxt, raw)
    assert not eng.killed and eng.day_pnl() == pytest.approx(0.0)
    assert fills(eng.decide(M, nxt, BUY_UP, raw), "open")
    assert math.isclose(eng.equity(), eng.totals.realised + eng.unrealised())


def test_scalar_helpers_match_the_shared_contract() -> None:
    import numpy as np

    from common.policy import transition
    from trader_svc.paper import intent, scalar_fee

    for side in (-1, 0, 1):
        for a in (HOLD, BUY_UP, BUY_DOWN):
            _, op, cl = transition(np.array([side]), np.array([a]))
            assert intent(side, a) == ("open" if op[0] else "close" if cl[0] else "none")
    for sh, px in ((1.0, 0.5), (123.4, 0.01), (7.0, 0.99), (3.0, 1.2), (2.0, -0.1)):
        for rate, ex in ((0.07, 1.0), (0.02, 2.0)):
            assert scalar_fee(sh, px, rate, ex) == pytest.approx(taker_fee(sh, px, rate, ex), rel=1e-15, abs=0)


def test_total_exposure_across_markets_and_trades_per_day_limits() -> None:
    eng = PaperEngine(PaperConfig(position_usd=40.0, max_exposure_usd=100.0))
    raw = raw_book(up_asks=[(0.5, 1000)])
    for m in ("A-5M", "B-5M", "C-5M"):
        assert fills(eng.decide(m, T0, BUY_UP, raw), "open")
    exposure = sum(p.cost for p in eng.pos.values())
    assert exposure <= 100.0 and eng.pos["C-5M"].cost < eng.pos["A-5M"].cost  # the third one was cut to fit
    (rf,) = eng.decide("D-5M", T0, BUY_UP, raw)
    assert rf["type"] == "refused" and "exposure" in rf["reason"]
    assert eng.snapshot()["exposure_usd"] == pytest.approx(exposure)

    eng = PaperEngine(PaperConfig(position_usd=10.0, max_trades_per_day=2))
    eng.on_state("A-5M", T0, raw)
    assert fills(eng.decide("A-5M", T0, BUY_UP, raw), "open") and fills(eng.decide("B-5M", T0, BUY_UP, raw), "open")
    (rf,) = eng.decide("C-5M", T0, BUY_UP, raw)
    assert rf["type"] == "refused" and "trades per day" in rf["reason"]
    assert fills(eng.decide("A-5M", T0, BUY_DOWN, raw_book(up_bids=[(0.5, 1000)])), "close")  # closes always allowed
    nxt = T0 + 86_400_000
    raw2 = raw_book(up_asks=[(0.5, 1000)], start_s=nxt / 1000, end_s=nxt / 1000 + 900)
    eng.on_state("C-5M", nxt, raw2)
    assert fills(eng.decide("C-5M", nxt, BUY_UP, raw2), "open") and eng.snapshot()["trades_today"] == 1
