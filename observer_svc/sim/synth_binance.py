"""Synthetic Binance market for one symbol: GBM price with jumps, Poisson aggTrades, a depth book
with a gap-free update-id chain, bookTicker and 1m klines. Pure and deterministic for a seed.

Guarantees: every step's depth event has ``pu`` = the previous event's ``u`` (futures ``U`` may skip
ids, as live; spot ``U`` = previous ``u`` + 1); ``snapshot()`` is the book after the last emitted
event with ``lastUpdateId`` = that event's ``u``; bookTicker ``u`` = that same id.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass
from functools import partial

import numpy as np

from observer_svc.sim import wire_out as wo
from observer_svc.sim.core import BOut

STEP_MS = 100
LEVELS = 20


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    price0: float
    tick: float
    price_dec: int
    qty_step: float
    qty_dec: int
    sigma_s: float  # per-second log-vol
    mean_qty: float


SPECS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec(60_000.0, 0.1, 2, 0.001, 3, 1.0e-4, 0.05),
    "ETHUSDT": SymbolSpec(3_000.0, 0.01, 2, 0.001, 3, 1.3e-4, 0.8),
    "SOLUSDT": SymbolSpec(150.0, 0.01, 2, 0.01, 2, 1.6e-4, 10.0),
    "XRPUSDT": SymbolSpec(0.6, 0.0001, 4, 0.1, 1, 1.6e-4, 2_000.0),
}
DEFAULT_SPEC = SymbolSpec(100.0, 0.01, 2, 0.01, 2, 1.5e-4, 10.0)


def spec_for(symbol: str) -> SymbolSpec:
    return SPECS.get(symbol.upper(), DEFAULT_SPEC)


class SymbolSim:
    """One symbol's market. ``step(t_ms)`` advances 100 ms and returns the frames of that step."""

    def __init__(
        self,
        symbol: str,
        rng: np.random.Generator,
        epoch_ms: int,
        seed: int,
        spot: bool = False,
        trade_rate: float = 30.0,
        jump_per_s: float = 1 / 300,
        jump_sd: float = 0.0015,
    ) -> None:
        self.sym = symbol.upper()
        self.lsym = symbol.lower()
        self.spec = spec_for(symbol)
        self.rng = rng
        self.spot = spot
        self.seed = seed
        self.trade_rate = trade_rate
        self.jump_per_s = jump_per_s
        self.jump_sd = jump_sd
        self.epoch_ms = epoch_ms
        self.pdec = 8 if spot else self.spec.price_dec
        self.qdec = 8 if spot else self.spec.qty_dec
        self.S = self.spec.price0 * math.exp(0.02 * (rng.random() - 0.5))
        self.S0 = self.S
        self.hist: deque[float] = deque(maxlen=3000)  # S per step (5 min)
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}
        self.last_u = int(rng.integers(10**11, 9 * 10**11))
        self.agg_id = int(rng.integers(10**8, 9 * 10**8))
        self.trade_id = int(rng.integers(10**9, 9 * 10**9))
        self.bid_i = 0
        self.ask_i = 0
        self.now_ms = epoch_ms
        self.last_trade_px = self.S
        self.finished: list[dict] = []
        self._history: list[dict] | None = None
        self.k0 = epoch_ms // 60_000 * 60_000
        self._open_bucket(self.k0, self.S)
        self._rebook(init=True)

    # ------------------------------------------------------------------ helpers
    def px(self, i: int) -> str:
        return wo.fmt_fixed(i * self.spec.tick, self.pdec)

    def qty(self, q: float) -> str:
        return wo.fmt_fixed(q, self.qdec)

    def price_at(self, steps_back: int) -> float:
        """S ``steps_back`` steps ago (the oldest known if the history is shorter)."""
        if not self.hist:
            return self.S
        return self.hist[max(0, len(self.hist) - 1 - steps_back)]

    def _open_bucket(self, t: int, price: float) -> None:
        self.k = {"t": t, "T": t + 59_999, "o": price, "h": price, "l": price, "c": price}
        self.k.update(v=0.0, q=0.0, V=0.0, Q=0.0, n=0, f=-1, L=-1)

    def _k_wire(self, closed: bool) -> dict:
        k, f = self.k, self.px
        r = round
        return {
            "t": k["t"],
            "T": k["T"],
            "f": k["f"],
            "L": k["L"],
            "o": f(r(k["o"] / self.spec.tick)),
            "c": f(r(k["c"] / self.spec.tick)),
            "h": f(r(k["h"] / self.spec.tick)),
            "l": f(r(k["l"] / self.spec.tick)),
            "v": self.qty(k["v"]),
            "n": k["n"],
            "x": closed,
            "q": wo.fmt_fixed(k["q"], 8 if self.spot else 5),
            "V": self.qty(k["V"]),
            "Q": wo.fmt_fixed(k["Q"], 8 if self.spot else 5),
        }

    def _rebook(self, init: bool = False) -> list[tuple[bool, int, float]]:
        """Re-centre the book on S; returns the changed levels (is_bid, index, qty; 0 = removed)."""
        tick = self.spec.tick
        bid_i = math.floor(self.S / tick)
        ask_i = bid_i + 1
        self.bid_i, self.ask_i = bid_i, ask_i
        u = self.rng.random(2 * LEVELS)
        sz = self.rng.lognormal(math.log(self.spec.mean_qty * 4), 1.0, 2 * LEVELS)
        changes: list[tuple[bool, int, float]] = []
        for is_bid, book, want in (
            (True, self.bids, range(bid_i, bid_i - LEVELS, -1)),
            (False, self.asks, range(ask_i, ask_i + LEVELS)),
        ):
            wanted = set(want)
            for i in [i for i in book if i not in wanted]:
                del book[i]
                changes.append((is_bid, i, 0.0))
            off = 0 if is_bid else LEVELS
            for k, i in enumerate(want):
                if i not in book or init or u[off + k] < 0.15:
                    q = max(self.spec.qty_step, round(sz[off + k] / self.spec.qty_step) * self.spec.qty_step)
                else:
                    continue
                book[i] = q
                changes.append((is_bid, i, q))
        return changes

    # ------------------------------------------------------------------ step
    def step(self, t: int) -> list[BOut]:
        rng, sp, dt = self.rng, self.spec, STEP_MS / 1000.0
        z = rng.standard_normal()
        jump = rng.normal(0.0, self.jump_sd) if rng.random() < self.jump_per_s * dt else 0.0
        prev = self.S
        self.S = prev * math.exp(sp.sigma_s * math.sqrt(dt) * z + jump)
        self.hist.append(self.S)
        self.now_ms = t
        outs: list[BOut] = []
        changes = self._rebook()
        # trades (aggressors hit the new top of book)
        n = int(rng.poisson(self.trade_rate * dt))
        offs = np.sort(rng.integers(0, STEP_MS, n)) if n else ()
        buys = rng.random(n) < min(0.8, max(0.2, 0.5 + (self.S / prev - 1.0) * 3000.0))
        qtys = rng.lognormal(math.log(sp.mean_qty), 1.0, n)
        fills = 1 + rng.poisson(0.6, n)
        lat = rng.integers(0, 4, n)
        for j in range(n):
            T = t - STEP_MS + 1 + int(offs[j])
            E = min(t, T + int(lat[j]))
            buy = bool(buys[j])
            i = self.ask_i if buy else self.bid_i
            price = i * sp.tick
            q = max(sp.qty_step, round(qtys[j] / sp.qty_step) * sp.qty_step)
            f_id = self.trade_id + 1
            self.trade_id += int(fills[j])
            self.agg_id += 1
            outs.append(
                BOut(
                    f"{self.lsym}@aggTrade", make=partial(self._agg, E, self.agg_id, i, q, f_id, self.trade_id, T, buy)
                )
            )
            outs.append(BOut(f"{self.lsym}@trade", make=partial(self._trade, E, self.trade_id, i, q, T, buy)))
            k = self.k
            k["h"], k["l"], k["c"] = max(k["h"], price), min(k["l"], price), price
            k["v"] += q
            k["q"] += q * price
            if buy:
                k["V"] += q
                k["Q"] += q * price
            k["n"] += int(fills[j])
            k["f"] = f_id if k["f"] < 0 else k["f"]
            k["L"] = self.trade_id
            self.last_trade_px = price
        # depth + bookTicker
        if changes:
            gap = 0 if self.spot else int(rng.integers(0, 30))
            U = self.last_u + 1 + gap
            u = U + len(changes) - 1 + int(rng.integers(0, 10))
            pu, self.last_u = self.last_u, u
            bl = sorted(((i, q) for b, i, q in changes if b), reverse=True)
            al = sorted((i, q) for b, i, q in changes if not b)
            outs.append(BOut(f"{self.lsym}@depth@100ms", make=partial(self._depth, t, U, u, pu, bl, al)))
        bi, ai = self.bid_i, self.ask_i
        bt = (self.last_u, bi, self.bids[bi], ai, self.asks[ai], t)
        outs.append(BOut(f"{self.lsym}@bookTicker", make=partial(self._book_ticker, *bt)))
        # klines: a push every 2 s, the closing push at the minute boundary
        if t >= self.k["T"] + 1:
            self.finished.append(self._k_wire(True))
            outs.append(BOut(f"{self.lsym}@kline_1m", wo.kline(self.sym, t, self.finished[-1])))
            self._open_bucket(self.k["T"] + 1, self.k["c"])
        elif t % 2000 == 0:
            outs.append(BOut(f"{self.lsym}@kline_1m", wo.kline(self.sym, t, self._k_wire(False))))
        return outs

    # ------------------------------------------------------------------ lazy payloads
    def _agg(self, E: int, a: int, i: int, q: float, f: int, last: int, T: int, buy: bool) -> dict:
        return wo.agg_trade(self.sym, E, a, self.px(i), self.qty(q), f, last, T, not buy, self.spot)

    def _trade(self, E: int, tid: int, i: int, q: float, T: int, buy: bool) -> dict:
        return wo.trade(self.sym, E, tid, self.px(i), self.qty(q), T, not buy, self.spot)

    def _depth(self, t: int, U: int, u: int, pu: int, bl: list, al: list) -> dict:
        bids = [[self.px(i), self.qty(q)] for i, q in bl]
        asks = [[self.px(i), self.qty(q)] for i, q in al]
        return wo.depth_update(self.sym, t, t - 2, U, u, pu, bids, asks, self.spot)

    def _book_ticker(self, u: int, bi: int, bq: float, ai: int, aq: float, t: int) -> dict:
        return wo.book_ticker(self.sym, u, self.px(bi), self.qty(bq), self.px(ai), self.qty(aq), t - 1, t, self.spot)

    # ------------------------------------------------------------------ REST
    def snapshot(self, limit: int, futures: bool) -> dict:
        bids = [[self.px(i), self.qty(self.bids[i])] for i in sorted(self.bids, reverse=True)[:limit]]
        asks = [[self.px(i), self.qty(self.asks[i])] for i in sorted(self.asks)[:limit]]
        return wo.depth_snapshot(self.last_u, bids, asks, self.now_ms if futures else None)

    def _history_rows(self) -> list[dict]:
        """1500 deterministic minutes before the epoch, ending at the opening price."""
        if self._history is None:
            rng = np.random.default_rng([self.seed, zlib.crc32(self.sym.encode())])
            n, sig = 1500, self.spec.sigma_s * math.sqrt(60.0)
            steps = rng.normal(0.0, sig, n)
            closes = self.S0 * np.exp(-np.concatenate([[0.0], np.cumsum(steps[::-1])])[::-1][1:])
            opens = np.concatenate([[closes[0] * math.exp(-steps[0])], closes[:-1]])
            spread = np.abs(rng.normal(0.0, sig * 0.5, (2, n)))
            vols = rng.lognormal(math.log(self.spec.mean_qty * 30 * 60), 0.4, n)
            t0 = self.k0 - n * 60_000
            rows = []
            for j in range(n):
                o, c = float(opens[j]), float(closes[j])
                h, lo = max(o, c) * (1 + spread[0, j]), min(o, c) * (1 - spread[1, j])
                v = float(vols[j])
                cnt = int(v / self.spec.mean_qty)
                t = t0 + j * 60_000
                rows.append(
                    {"t": t, "T": t + 59_999, "o": self._p(o), "h": self._p(h), "l": self._p(lo), "c": self._p(c),
                     "v": self.qty(v), "n": cnt, "f": 0, "L": 0, "x": True,
                     "q": wo.fmt_fixed(v * c, 5), "V": self.qty(v / 2), "Q": wo.fmt_fixed(v * c / 2, 5)}
                )  # fmt: skip
            self._history = rows
        return self._history

    def _p(self, x: float) -> str:
        return self.px(round(x / self.spec.tick))

    def klines(self, limit: int, start: int | None, end: int | None) -> list[list]:
        rows = self._history_rows() + self.finished + [self._k_wire(False)]
        if start is not None:
            rows = [r for r in rows if r["t"] >= start]
        if end is not None:
            rows = [r for r in rows if r["t"] <= end]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return [wo.kline_row(r) for r in rows]
