"""Synthetic driver: Binance symbols (synth_binance) plus Polymarket Up/Down books that follow them
with a real lead-lag, on a sim clock. Deterministic for (seed, epoch, markets, options).

fair_up(t) = Phi(ln(S(t - lag) / S_open) / (sigma * sqrt(T_remaining))) + OU noise; the Up book is
quoted around it (1-3 ticks of spread, tick 0.01, 0.001 beyond 0.96/0.04); the Down book is its
mirror (Down bid = 1 - Up ask). A window resolves Up iff S(end) >= S(start). With
``lead_lag=False`` fair value follows an independent latent path (and so does the resolution):
Polymarket then carries no information from Binance at all.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from common.markets import MarketSpec, parse_market
from observer_svc.sim import wire_out as wo
from observer_svc.sim.core import Driver, Out, PolyWindow, POut
from observer_svc.sim.synth_binance import STEP_MS, SymbolSim

LEVELS = 5


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(slots=True)
class UpBook:
    """The Up token's book in thousandths (the Down book is its mirror)."""

    bids: dict[int, float] = field(default_factory=dict)
    asks: dict[int, float] = field(default_factory=dict)
    tick: int = 10
    k: int = 1  # spread in ticks
    noise: float = 0.0
    bba: tuple[int, int] = (0, 0)  # last best bid/ask announced
    last: dict[str, str] = field(default_factory=dict)  # last trade price per asset


class SyntheticDriver(Driver):
    name = "synthetic"

    def __init__(
        self,
        markets: list[str] | tuple[str, ...] = ("BTC-15M",),
        seed: int = 1,
        speed: float = 20.0,
        epoch_ms: int | None = None,
        lead_lag: bool = True,
        lag_s: float = 5.0,
        binance_kind: str = "futures",
        noise_sd: float = 0.004,
        trade_rate: float = 30.0,
        poly_trade_rate: float = 0.5,
        windows_ahead: int = 3,
    ) -> None:
        self.specs: list[MarketSpec] = [parse_market(m) for m in markets]
        self.seed, self.speed, self.lead_lag, self.lag_s = seed, float(speed), lead_lag, lag_s
        self.binance_kind = binance_kind
        self.noise_sd, self.poly_trade_rate, self.ahead = noise_sd, poly_trade_rate, windows_ahead
        iv = min((s.interval_s for s in self.specs if s.interval_s), default=900)
        self.epoch_ms = epoch_ms if epoch_ms is not None else int(time.time() // iv * iv * 1000)
        self.now_ms = self.epoch_ms
        syms = list(dict.fromkeys(s.binance_symbol for s in self.specs))
        self.syms = {
            s: SymbolSim(
                s, np.random.default_rng([seed, i, 1]), self.epoch_ms, seed, binance_kind == "spot", trade_rate
            )  # fmt: skip
            for i, s in enumerate(syms)
        }
        self.latent = {s: deque([1.0], maxlen=3000) for s in syms}
        self.rng = np.random.default_rng([seed, 2])
        self.lag_steps = max(0, round(lag_s * 1000 / STEP_MS))
        self.wins: dict[str, PolyWindow] = {}
        self.books: dict[str, UpBook] = {}
        self._by_token: dict[str, PolyWindow] = {}
        self._hash_n = 0
        for sp in self.specs:
            self._ensure(sp, self.epoch_ms)

    # ------------------------------------------------------------------ windows
    def _add(self, w: PolyWindow) -> PolyWindow:
        self.wins[w.slug] = w
        self.books[w.slug] = UpBook(last={w.up: "0.5", w.down: "0.5"})
        self._by_token[w.up] = self._by_token[w.down] = w
        return w

    def _ensure(self, sp: MarketSpec, t: int) -> list[PolyWindow]:
        """Create the current window and the next ``ahead`` ones; returns the newly created."""
        made = []
        if sp.is_series:
            iv = int(sp.interval_s or 900)
            cur = t // 1000 // iv * iv
            for k in range(self.ahead + 1):
                slug = sp.series_slug(cur + k * iv)
                if slug not in self.wins:
                    s = (cur + k * iv) * 1000
                    made.append(self._add(PolyWindow(sp.name, sp.binance_symbol, slug, s, s + iv * 1000)))
        elif not any(w.market == sp.name for w in self.wins.values()):
            slug = sp.fixed_slug or f"fixed-{(sp.fixed_condition_id or '0x')[2:12]}"
            w = PolyWindow(sp.name, sp.binance_symbol, slug, t, t + 86_400_000, cid=sp.fixed_condition_id or "")
            made.append(self._add(w))
        return made

    def _prune(self, t: int) -> None:
        old = [s for s, w in self.wins.items() if w.resolved and t - w.end_ms > 3_600_000]
        for s in old:
            w = self.wins.pop(s)
            self.books.pop(s, None)
            self._by_token.pop(w.up, None)
            self._by_token.pop(w.down, None)

    # ------------------------------------------------------------------ steps
    def steps(self):
        t = self.epoch_ms
        while True:
            t += STEP_MS
            outs: list[Out] = []
            for sim in self.syms.values():
                outs.extend(sim.step(t))
            for s, lat in self.latent.items():
                sig = self.syms[s].spec.sigma_s
                lat.append(lat[-1] * math.exp(sig * math.sqrt(STEP_MS / 1000) * self.rng.standard_normal()))
            self.now_ms = t
            outs.extend(self._poly_step(t))
            yield t, outs

    def _ref_price(self, w: PolyWindow, back: int) -> float:
        if self.lead_lag:
            return self.syms[w.symbol].price_at(back)
        lat = self.latent[w.symbol]
        return lat[max(0, len(lat) - 1 - back)]

    def _poly_step(self, t: int) -> list[Out]:
        outs: list[Out] = []
        for sp in self.specs:
            for w in self._ensure(sp, t):
                outs.append(POut((w.up, w.down), [wo.new_market(w, t)], custom=True, broadcast=True))
        rng = self.rng
        for w in sorted(self.wins.values(), key=lambda x: x.start_ms):
            if w.resolved:
                continue
            bk = self.books[w.slug]
            if t >= w.end_ms:
                w.winner_up = self._ref_price(w, 0) >= w.extra["open"]
                w.resolved = True
                outs.append(POut((w.up, w.down), [wo.market_resolved(w, t, w.winner_up)], custom=True))
                continue
            live = t >= w.start_ms
            if live and "open" not in w.extra:
                w.extra["open"] = self._ref_price(w, 0)
            bk.noise = bk.noise * 0.97 + rng.normal(0.0, self.noise_sd)
            requote = rng.random()
            if not live:
                fair = 0.5
                if requote > 0.05 and bk.bids:
                    continue
            else:
                sig = self.syms[w.symbol].spec.sigma_s
                t_rem = max(1.0, (w.end_ms - t) / 1000.0)
                z = math.log(self._ref_price(w, self.lag_steps) / w.extra["open"]) / (sig * math.sqrt(t_rem))
                fair = _phi(z)
            target = min(0.998, max(0.002, fair + bk.noise))
            outs.extend(self._requote(w, bk, target * 1000.0, t))
            if live and rng.random() < self.poly_trade_rate * STEP_MS / 1000.0:
                outs.extend(self._trade(w, bk, t))
        self._prune(t)
        return outs

    def _entries(self, w: PolyWindow, bk: UpBook, changes: list[tuple[bool, int, float]], t: int) -> list[dict]:
        """price_change entries for Up and its mirrored Down changes."""
        ubb, uba = max(bk.bids, default=0), min(bk.asks, default=1000)
        dbb, dba = 1000 - uba, 1000 - ubb
        up_e, dn_e = [], []
        for is_bid, p, s in changes:
            self._hash_n += 1
            ss = wo.fmt_poly(s, 2)
            up_e.append(
                wo.price_change_entry(
                    w.up, wo.milli_str(p), ss, "BUY" if is_bid else "SELL", wo.hex_hash(w.up, t, self._hash_n),
                    wo.milli_str(ubb), wo.milli_str(uba),
                )
            )  # fmt: skip
            dn_e.append(
                wo.price_change_entry(
                    w.down, wo.milli_str(1000 - p), ss, "SELL" if is_bid else "BUY",
                    wo.hex_hash(w.down, t, self._hash_n), wo.milli_str(dbb), wo.milli_str(dba),
                )
            )  # fmt: skip
        return up_e + dn_e

    def _requote(self, w: PolyWindow, bk: UpBook, target: float, t: int) -> list[Out]:
        rng = self.rng
        events: list[dict] = []
        new_tick = 1 if (target > 960 or target < 40) else 10
        if new_tick != bk.tick:
            old, new = ("0.01", "0.001") if new_tick == 1 else ("0.001", "0.01")
            events += [wo.tick_size_change(w.cid, a, t, old, new) for a in (w.up, w.down)]
            bk.tick = new_tick
        if rng.random() < 0.05:
            bk.k = int(rng.integers(1, 4))
        tick, k = bk.tick, bk.k
        bb = int(math.floor((target - k * tick / 2.0) / tick)) * tick
        bb = min(max(bb, tick), 1000 - tick * (k + 1))
        ba = bb + k * tick
        sizes = rng.lognormal(math.log(250.0), 0.8, 2 * LEVELS)
        u = rng.random(2 * LEVELS)
        changes: list[tuple[bool, int, float]] = []
        for is_bid, book, want in (
            (True, bk.bids, [p for p in range(bb, bb - LEVELS * tick, -tick) if p >= tick]),
            (False, bk.asks, [p for p in range(ba, ba + LEVELS * tick, tick) if p <= 1000 - tick]),
        ):
            ws = set(want)
            for p in [p for p in book if p not in ws]:
                del book[p]
                changes.append((is_bid, p, 0.0))
            off = 0 if is_bid else LEVELS
            for j, p in enumerate(want):
                if p not in book or u[off + j] < 0.03:
                    book[p] = round(float(sizes[off + j]), 2)
                    changes.append((is_bid, p, book[p]))
        if changes:
            events.append(wo.price_change(w.cid, t, self._entries(w, bk, changes, t)))
        outs: list[Out] = []
        if events:
            if len(events) > 1 and rng.random() < 0.25:
                outs.append(POut((w.up, w.down), events, as_array=True))
            else:
                outs.extend(POut((w.up, w.down), [e]) for e in events)
        ubb, uba = max(bk.bids, default=0), min(bk.asks, default=1000)
        if (ubb, uba) != bk.bba:
            bk.bba = (ubb, uba)
            sp = wo.milli_str(uba - ubb)
            outs.append(
                POut(
                    (w.up, w.down),
                    [
                        wo.best_bid_ask(w.cid, w.up, t, wo.milli_str(ubb), wo.milli_str(uba), sp),
                        wo.best_bid_ask(w.cid, w.down, t, wo.milli_str(1000 - uba), wo.milli_str(1000 - ubb), sp),
                    ],
                    as_array=True,
                    custom=True,
                )
            )
        return outs

    def _trade(self, w: PolyWindow, bk: UpBook, t: int) -> list[Out]:
        rng = self.rng
        up_token, buy = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        size = round(float(rng.lognormal(math.log(40.0), 1.0)), 2)
        # which Up-book level the taker consumes (Down orders are the Up book's mirror)
        hit_ask = buy == up_token
        book = bk.asks if hit_ask else bk.bids
        if not book:
            return []
        p = min(book) if hit_ask else max(book)
        size = min(size, book[p])
        left = round(book[p] - size, 2)
        if left <= 0:
            del book[p]
        else:
            book[p] = left
        asset = w.up if up_token else w.down
        price = wo.milli_str(p if up_token else 1000 - p)
        bk.last[asset] = price
        ev = [
            wo.last_trade_price(w.cid, asset, t, price, wo.fmt_poly(size, 2), "BUY" if buy else "SELL",
                                wo.hex_hash("tx", w.cid, t, self._hash_n) + "0" * 24),
            wo.price_change(w.cid, t, self._entries(w, bk, [(not hit_ask, p, max(left, 0.0))], t)),
        ]  # fmt: skip
        if rng.random() < 0.5:
            return [POut((w.up, w.down), ev, as_array=True)]
        return [POut((w.up, w.down), [e]) for e in ev]

    # ------------------------------------------------------------------ REST / state
    def venues(self) -> set[str]:
        return {"binance", "polymarket"} if self.wins else {"binance"}

    def depth(self, symbol: str, limit: int, futures: bool) -> dict | None:
        sim = self.syms.get(symbol.upper())
        return sim.snapshot(limit, futures) if sim else None

    def klines(self, symbol: str, limit: int, start: int | None, end: int | None) -> list | None:
        sim = self.syms.get(symbol.upper())
        return sim.klines(limit, start, end) if sim else None

    def last_price(self, symbol: str) -> str | None:
        sim = self.syms.get(symbol.upper())
        return sim.px(round(sim.last_trade_px / sim.spec.tick)) if sim else None

    def windows(self) -> list[PolyWindow]:
        return list(self.wins.values())

    def window_by_slug(self, slug: str) -> PolyWindow | None:
        return self.wins.get(slug)

    def window_by_token(self, token: str) -> PolyWindow | None:
        return self._by_token.get(token)

    def up_price(self, w: PolyWindow) -> float:
        bk = self.books.get(w.slug)
        if not bk or not bk.bids or not bk.asks:
            return 0.5
        return (max(bk.bids) + min(bk.asks)) / 2000.0

    def book_event(self, asset: str) -> dict | None:
        w = self._by_token.get(asset)
        if w is None or w.resolved:
            return None
        bk = self.books[w.slug]
        if asset == w.up:
            bids, asks = bk.bids, bk.asks
        else:
            bids = {1000 - p: s for p, s in bk.asks.items()}
            asks = {1000 - p: s for p, s in bk.bids.items()}
        tick = "0.001" if bk.tick == 1 else "0.01"
        return wo.poly_book(w.cid, asset, self.now_ms, wo.levels(bids, False), wo.levels(asks, True), tick,
                            bk.last.get(asset, "0.5"))  # fmt: skip

    def status(self) -> dict:
        return {
            "seed": self.seed,
            "epoch_ms": self.epoch_ms,
            "lead_lag": self.lead_lag,
            "lag_s": self.lag_s,
            "prices": {s: sim.S for s, sim in self.syms.items()},
            "windows": [
                {
                    "slug": w.slug,
                    "start_ms": w.start_ms,
                    "end_ms": w.end_ms,
                    "resolved": w.resolved,
                    "winner": None if w.winner_up is None else ("Up" if w.winner_up else "Down"),
                    "up_mid": self.up_price(w),
                }
                for w in sorted(self.wins.values(), key=lambda x: (x.market, x.start_ms))
            ],  # fmt: skip
        }
