"""Paper execution against the recorded book (pure: no IO, no clock; time is the states' tick time).

Per market, one position at a time (:func:`common.policy.transition` semantics: flat + BUY_UP opens
Up, holding Up + BUY_DOWN closes it, a position never flips in one step). Call order per state:
``on_state`` (settles, executes orders whose latency has elapsed, marks), then ``agent_features``
for the observation, then ``decide`` with the policy's action.

Guarantees:

* **fills** walk the recorded levels of the state (``up_ask_px_0..4`` / ``up_ask_sz_0..4`` etc.,
  best first): an open spends at most ``position_usd`` on shares at the asks of the token, the taker
  fee (:func:`common.fees.taker_fee`'s formula, per level: :func:`scalar_fee`) on top (the labeler's and replay env's
  convention); a close sells the held shares at the bids, less the fee. When the depth is short the
  fill is partial (an open holds fewer shares; a close leaves the rest open, cost reduced pro rata);
  a side with no usable level refuses the order. Levels with NaN / non-positive size or a price
  outside (0, 1] are skipped.
* **latency**: an order decided at tick ``t`` fills against the first state with tick
  ``>= t + latency_ms`` (the same state when 0). One order in flight per market; an order whose
  intent (open/close) no longer matches the position when it comes due is refused, never inverted.
* **settlement**: a position settles (Up: ``pm_settle_up`` per share, Down: ``1 - pm_settle_up``,
  no fee) on the first state that knows the resolution of the window it was opened in: its own
  ``pm_settle_up`` or, after the rollover, ``pm_prev_settle_up`` with ``pm_prev_end_s`` equal to the
  position's window end. Until then it cannot be traded against the next window's book.
* **risk** (all limits span every market of the trader): an open never spends more than ``position_usd``,
  nor more than what keeps the cost of all open positions within ``max_exposure_usd`` (0: no limit; the
  open is cut to fit, refused below ``MIN_OPEN_USD``); at most ``max_trades_per_day`` opens per UTC day
  (0: no limit). Day PnL = equity now - equity at the first state of the UTC day; when it reaches
  ``-max_daily_loss_usd`` the kill switch trips for the rest of that UTC day: opens are refused, closes
  and settlements still happen. So a day's loss stays within ``max_daily_loss_usd`` plus what was open
  when it tripped (at most ``max_exposure_usd``). Risk transitions are records too (``day``: a new UTC day
  and its start equity; ``kill``: the switch tripped), so :mod:`trader_svc.state` can rebuild the engine
  from the trade stream alone.
* **marks**: an open position is marked at its token's best bid net of the fee per share (as the
  replay env does); unrealised = mark - cost; the ``position_pnl`` feature is unrealised / cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.policy import BUY_DOWN, BUY_UP, FLAT, HOLD, SIDE_DOWN, SIDE_UP
from common.schema import NO_PM_MARKET, PM_RESOLVED, POLY_BOOK_EMPTY, RAW_INDEX, STALE_POLY
from trader_svc.book import EPS, Walk, _book, scalar_fee, walk_buy, walk_sell

F64 = npt.NDArray[np.float64]
DAY_MS = 86_400_000
OPEN_BAD_FLAGS = STALE_POLY | POLY_BOOK_EMPTY | NO_PM_MARKET | PM_RESOLVED
MIN_OPEN_USD = 1.0  # an open cut below this by the exposure limit is refused instead
SIDE_NAME = {SIDE_UP: "up", SIDE_DOWN: "down", FLAT: "flat"}
ACTION_NAME = {HOLD: "hold", BUY_UP: "buy_up", BUY_DOWN: "buy_down"}


def intent(side: int, action: int) -> str:
    """What :func:`common.policy.transition` asks for, for one market: "open", "close" or "none"."""
    if action == HOLD:
        return "none"
    if side == FLAT:
        return "open"
    return "close" if (side == SIDE_UP) == (action == BUY_DOWN) else "none"


_TOKEN = {SIDE_UP: "up", SIDE_DOWN: "dn"}
_END, _SETTLE = RAW_INDEX["pm_end_s"], RAW_INDEX["pm_settle_up"]
_PREV_END, _PREV_SETTLE = RAW_INDEX["pm_prev_end_s"], RAW_INDEX["pm_prev_settle_up"]


@dataclass(frozen=True, slots=True)
class PaperConfig:
    position_usd: float = 100.0
    max_daily_loss_usd: float = 500.0
    latency_ms: int = 0
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    max_exposure_usd: float = 0.0  # cost of all open positions, every market; 0: no limit
    max_trades_per_day: int = 0  # opens per UTC day, every market; 0: no limit


@dataclass(slots=True)
class Position:
    side: int
    shares: float
    cost: float  # USD paid for the shares still held, fees included
    window_end_s: float
    opened_tick: int
    mark: float  # liquidation value at the best bid net of fees (last known)
    model: str = ""  # the model version that opened it (its settlement is recorded under that version)


@dataclass(slots=True)
class Order:
    market: str
    tick_ms: int  # decision tick
    due_ms: int
    action: int
    intent: str  # "open" | "close"
    version: str


@dataclass(slots=True)
class Totals:
    realised: float = 0.0
    fees: float = 0.0
    fills: int = 0
    partial_fills: int = 0
    settlements: int = 0
    refused: int = 0
    wins: int = 0
    closed: int = 0


class PaperEngine:
    """Positions, orders and PnL of one trader over many markets."""

    def __init__(self, cfg: PaperConfig, markets: list[str] | tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.pos: dict[str, Position] = {}
        self.orders: dict[str, Order] = {}
        self.totals = Totals()
        self.day: int | None = None
        self.day_start_equity = 0.0
        self.killed = False
        self.kill_trips = 0
        self.trades_today = 0  # opens filled this UTC day
        self.markets = list(markets)
        self._risk: list[dict[str, Any]] = []  # day / kill records not yet returned

    def exposure(self) -> float:
        """Cost (fees included) of every open position."""
        return sum(p.cost for p in self.pos.values())

    # ------------------------------------------------------------------ accounting
    def unrealised(self) -> float:
        return sum(p.mark - p.cost for p in self.pos.values())

    def equity(self) -> float:
        return self.totals.realised + self.unrealised()

    def day_pnl(self) -> float:
        return self.equity() - self.day_start_equity

    def _roll_day(self, tick_ms: int) -> None:
        d = tick_ms // DAY_MS
        if self.day is None or d > self.day:
            self.day = d
            self.day_start_equity = self.equity()
            self.killed = False
            self.trades_today = 0
            self._risk.append({"type": "day", "day": d, "tick": tick_ms, "start_equity": self.day_start_equity})

    def _check_risk(self) -> None:
        if not self.killed and self.day_pnl() <= -self.cfg.max_daily_loss_usd:
            self.killed = True
            self.kill_trips += 1
            self._risk.append({"type": "kill", "day": self.day, "day_pnl": self.day_pnl()})

    def operator_kill(self, on: bool, by: str = "operator") -> bool:
        """Trip (``on``) or reset the kill switch by hand; the ``kill`` / ``kill-reset`` record goes out with the
        next step's records. A reset on a day whose loss is still over the limit trips again at the next check.
        Returns whether the switch changed."""
        if self.killed == on:
            return False
        self.killed = on
        if on:
            self.kill_trips += 1
            self._risk.append({"type": "kill", "day": self.day, "day_pnl": self.day_pnl(), "by": by})
        else:
            self._risk.append({"type": "kill-reset", "day": self.day, "day_pnl": self.day_pnl(), "by": by})
        return True

    def _drain(self, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._risk:
            out = self._risk + out if self._risk[0]["type"] == "day" else out + self._risk
            self._risk = []
        return out

    # ------------------------------------------------------------------ per state
    def on_state(self, market: str, tick_ms: int, raw: F64, flags: int = 0) -> list[dict[str, Any]]:
        """Settle, execute due orders, mark. Returns the fill / refusal records it produced."""
        self._roll_day(tick_ms)
        out: list[dict[str, Any]] = []
        pos = self.pos.get(market)
        if pos is not None:
            s = self._settlement(pos, raw)
            if s is not None:
                out.append(self._settle(market, pos, s, tick_ms))
        order = self.orders.get(market)
        if order is not None and tick_ms >= order.due_ms:
            del self.orders[market]
            out += self._execute(order, tick_ms, raw, flags)
        self._mark(market, raw)
        self._check_risk()
        return self._drain(out)

    def _mark(self, market: str, raw: F64) -> None:
        """Mark an open position at its token's best bid net of the fee (kept when there is no bid)."""
        pos = self.pos.get(market)
        if pos is not None and self._same_window(pos, raw):
            bids = _book(raw, _TOKEN[pos.side], "bid")
            if bids:
                bid = bids[0][0]
                pos.mark = pos.shares * (bid - scalar_fee(1.0, bid, self.cfg.fee_rate, self.cfg.fee_exponent))

    def agent_features(self, markets: list[str]) -> tuple[F64, F64, F64]:
        """(has_position, side, unrealised / cost) per market, for common.features.agent_features."""
        has, side, frac = np.zeros(len(markets)), np.zeros(len(markets)), np.zeros(len(markets))
        for i, m in enumerate(markets):
            p = self.pos.get(m)
            if p is not None:
                has[i], side[i] = 1.0, float(p.side)
                frac[i] = (p.mark - p.cost) / p.cost if p.cost > 0 else 0.0
        return has, side, frac

    def side_of(self, market: str) -> int:
        p = self.pos.get(market)
        return p.side if p is not None else FLAT

    def decide(
        self, market: str, tick_ms: int, action: int, raw: F64, flags: int = 0, version: str = ""
    ) -> list[dict[str, Any]]:
        """Submit the policy's action for ``market`` at ``tick_ms``; with no latency it fills now
        against ``raw`` (the state it was decided on). Returns fill / refusal records."""
        if action == HOLD:
            return []
        want = intent(self.side_of(market), action)
        if want == "none":
            return []  # e.g. holding Up + BUY_UP: a no-op by the contract
        order = Order(market, tick_ms, tick_ms + self.cfg.latency_ms, int(action), want, version)
        if market in self.orders:
            return [self._refuse(order, tick_ms, "order in flight")]
        if self.cfg.latency_ms <= 0:
            out = self._execute(order, tick_ms, raw, flags)
            self._check_risk()
            return self._drain(out)
        self.orders[market] = order
        return []

    # ------------------------------------------------------------------ execution
    @staticmethod
    def _same_window(pos: Position, raw: F64) -> bool:
        end = float(raw[_END])
        return math.isfinite(end) and abs(end - pos.window_end_s) < 1e-6

    @staticmethod
    def _settlement(pos: Position, raw: F64) -> float | None:
        end, s = float(raw[_END]), float(raw[_SETTLE])
        if math.isfinite(end) and abs(end - pos.window_end_s) < 1e-6 and s in (0.0, 1.0):
            return s
        pend, ps = float(raw[_PREV_END]), float(raw[_PREV_SETTLE])
        if math.isfinite(pend) and abs(pend - pos.window_end_s) < 1e-6 and ps in (0.0, 1.0):
            return ps
        return None

    def _refuse(self, o: Order, tick_ms: int, reason: str) -> dict[str, Any]:
        self.totals.refused += 1
        return {
            "type": "refused", "market": o.market, "tick": o.tick_ms, "fill_tick": tick_ms,
            "action": ACTION_NAME[o.action], "intent": o.intent, "reason": reason, "model": o.version,
        }  # fmt: skip

    def _record(self, o: Order | None, market: str, kind: str, side: int, tick_ms: int, w: Walk,
                want: float, partial: bool, cash: float, realised: float, version: str) -> dict[str, Any]:  # fmt: skip
        """``want``: USD budget of an open, shares of a close / settlement."""
        self.totals.fills += 1
        self.totals.partial_fills += int(partial)
        return {
            "type": "fill", "market": market, "kind": kind, "side": SIDE_NAME[side],
            "tick": o.tick_ms if o else tick_ms, "fill_tick": tick_ms,
            "action": ACTION_NAME[o.action] if o else "settle",
            "shares": w.shares, "want": want, "avg_px": w.avg_px, "notional": w.notional, "fee": w.fee,
            "levels": w.levels, "partial": partial, "cash": cash, "realised": realised, "model": version,
        }  # fmt: skip

    def _execute(self, o: Order, tick_ms: int, raw: F64, flags: int) -> list[dict[str, Any]]:
        now = intent(self.side_of(o.market), o.action)
        if now != o.intent:
            return [self._refuse(o, tick_ms, f"position changed before the fill ({o.intent} -> {now})")]
        c = self.cfg
        if now == "close":
            pos = self.pos[o.market]
            if not self._same_window(pos, raw):
                return [self._refuse(o, tick_ms, "window ended: awaiting settlement")]
            w = walk_sell(_book(raw, _TOKEN[pos.side], "bid"), pos.shares, c.fee_rate, c.fee_exponent)
            if w.shares <= EPS:
                return [self._refuse(o, tick_ms, "no bid")]
            frac = min(1.0, w.shares / pos.shares)
            basis = pos.cost * frac
            cash = w.notional - w.fee
            realised = cash - basis
            partial = frac < 1.0 - 1e-12
            rec = self._record(
                o, o.market, "close", pos.side, tick_ms, w, pos.shares, partial, cash, realised, o.version
            )
            self.totals.realised += realised
            self.totals.fees += w.fee
            if not partial:
                self._flat(o.market, realised)
            else:
                pos.shares -= w.shares
                pos.cost -= basis
                pos.mark *= 1.0 - frac
            return [rec]
        # open
        if self.killed:
            return [self._refuse(o, tick_ms, "kill switch: max daily loss reached")]
        end = float(raw[_END])
        if flags & OPEN_BAD_FLAGS:
            return [self._refuse(o, tick_ms, f"state flags {flags} forbid opening")]
        if not math.isfinite(end) or tick_ms >= end * 1000.0:
            return [self._refuse(o, tick_ms, "no open Polymarket window")]
        if c.max_trades_per_day > 0 and self.trades_today >= c.max_trades_per_day:
            return [self._refuse(o, tick_ms, f"max trades per day reached ({c.max_trades_per_day})")]
        budget = c.position_usd
        if c.max_exposure_usd > 0:  # fee <= rate x notional: this budget keeps the cost within the limit
            budget = min(budget, (c.max_exposure_usd - self.exposure()) / (1.0 + c.fee_rate))
            if budget < MIN_OPEN_USD:
                return [self._refuse(o, tick_ms, f"max exposure reached ({c.max_exposure_usd} USD)")]
        new_side = SIDE_UP if o.action == BUY_UP else SIDE_DOWN
        asks = _book(raw, _TOKEN[new_side], "ask")
        w = walk_buy(asks, budget, c.fee_rate, c.fee_exponent)
        if w.shares <= EPS:
            return [self._refuse(o, tick_ms, "no ask")]
        cost = w.notional + w.fee
        partial = w.notional < c.position_usd - 1e-9
        rec = self._record(o, o.market, "open", new_side, tick_ms, w, c.position_usd, partial, -cost, 0.0, o.version)
        rec["window_end_s"] = end
        self.trades_today += 1
        self.totals.fees += w.fee
        self.pos[o.market] = Position(
            new_side, w.shares, cost, end, tick_ms, cost, o.version
        )  # marked at cost until a bid
        self._mark(o.market, raw)
        return [rec]

    def settle_recorded(self, market: str, tick_ms: int, raw: F64) -> list[dict[str, Any]]:
        """Settle ``market``'s position from a recorded state (one read back after a restart) when that state
        knows the resolution of the position's window (the rule of :meth:`on_state`), at that state's tick:
        the day rolls and the kill switch trips as they would have live. Returns [] when it does not know."""
        pos = self.pos.get(market)
        s = self._settlement(pos, raw) if pos is not None else None
        if pos is None or s is None:
            return []
        self._roll_day(tick_ms)
        rec = self._settle(market, pos, s, tick_ms)
        rec["recovered"] = True
        self._check_risk()
        return self._drain([rec])

    def _settle(self, market: str, pos: Position, s: float, tick_ms: int) -> dict[str, Any]:
        px = s if pos.side == SIDE_UP else 1.0 - s
        value = pos.shares * px
        realised = value - pos.cost
        w = Walk(pos.shares, value, 0.0, 0)
        rec = self._record(None, market, "settle", pos.side, tick_ms, w, pos.shares, False, value, realised, pos.model)
        rec["settle_up"] = s
        self.totals.realised += realised
        self.totals.settlements += 1
        self._flat(market, realised)
        order = self.orders.get(market)
        if order is not None and order.intent == "close":  # nothing left to close
            del self.orders[market]
        return rec

    def _flat(self, market: str, realised: float) -> None:
        self.totals.closed += 1
        self.totals.wins += int(realised > 0)
        del self.pos[market]

    # ------------------------------------------------------------------ reporting
    def snapshot(self) -> dict[str, Any]:
        """JSON-able summary: PnL, positions, risk state."""
        return {
            "realised_usd": self.totals.realised,
            "unrealised_usd": self.unrealised(),
            "equity_usd": self.equity(),
            "day_pnl_usd": self.day_pnl(),
            "kill_switch": self.killed,
            "kill_trips": self.kill_trips,
            "exposure_usd": self.exposure(),
            "trades_today": self.trades_today,
            "positions": {
                m: {**asdict(p), "side": SIDE_NAME[p.side], "unrealised_usd": p.mark - p.cost}
                for m, p in sorted(self.pos.items())
            },
            "orders_in_flight": len(self.orders),
            **{k: v for k, v in asdict(self.totals).items() if k != "realised"},
        }
