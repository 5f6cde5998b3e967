"""Observer capacity: CPU per market at a realistic message rate, and states published per second.

One process holds ``markets`` markets over ``symbols`` Binance symbols (several markets share a
symbol, as BTC-5M/BTC-15M/BTC-1H do). Each simulated second it takes, through the real client
frame handlers (``BinanceClient._on_frame`` / ``PolymarketClient._on_frame``: parse + route +
book + aggregates + metrics), per symbol 25 aggTrades, 10 bookTickers and one kline, and per
market 3 Polymarket ``price_change`` frames (2 level changes each); every 500 ms it builds and
encodes every market's state with the real :class:`StateBuilder` and XADDs them in one pipeline
to a private redis-server. Frames are pre-encoded; the sockets are left out (measured elsewhere).

Figures: process CPU seconds per simulated second (= share of one core needed in real time),
per market, the headroom on a 2-core machine, and the peak states/s when ticking flat out.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import redis

from common.markets import parse_market
from common.redisproc import RedisServer
from common.schema import PolymarketWindow
from common.settings import Settings
from common.streams import publish_states
from observer_svc.binance_client import BinanceClient
from observer_svc.polymarket_client import PolymarketClient
from observer_svc.state_builder import MarketSides, StateBuilder

T0 = 1_795_000_000_000


def _setup(n_markets: int, n_symbols: int, settings: Settings) -> tuple[BinanceClient, PolymarketClient, list[str]]:
    assets = [f"A{i:02d}X" for i in range(n_symbols)]
    intervals = ["5M", "15M", "1H", "4H"]
    names: list[str] = []
    for i in range(n_markets):
        names.append(f"{assets[i % n_symbols]}-{intervals[(i // n_symbols) % 4]}" if i < 4 * n_symbols
                     else f"M{i}=slug:fixed-{i}@{assets[i % n_symbols]}USDT")  # fmt: skip
    specs = [parse_market(n) for n in names]
    bn = BinanceClient(settings, sorted({s.binance_symbol for s in specs}))
    pm = PolymarketClient(settings)
    for k, s in enumerate(specs):
        st = pm.add_market(s)
        st.add_window(PolymarketWindow(f"slug-{k}", f"0x{k:064x}", f"{10**20 + 2 * k}", f"{10**20 + 2 * k + 1}",
                                       T0, T0 + 3_600_000))  # fmt: skip
    pm._reindex()  # what run() does after discovery
    return bn, pm, [s.name for s in specs]


def _frames(second: int, bn: BinanceClient, pm: PolymarketClient, rng: random.Random) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    base = T0 + second * 1000
    for j, sym in enumerate(bn.symbols):
        s = sym.lower()
        px = 100.0 + j + rng.random()
        for k in range(25):
            d = {"e": "aggTrade", "E": base + 40 * k, "a": second * 100 + k, "s": sym, "p": f"{px:.2f}",
                 "q": f"{rng.random():.3f}", "f": 1, "l": 2, "T": base + 40 * k, "m": rng.random() < 0.5}  # fmt: skip
            out.append(("b", orjson.dumps({"stream": f"{s}@aggTrade", "data": d})))
        for k in range(10):
            d = {"e": "bookTicker", "u": second * 100 + k, "s": sym, "b": f"{px - 0.01:.2f}", "B": "1.5",
                 "a": f"{px + 0.01:.2f}", "A": "2.0", "T": base + 100 * k, "E": base + 100 * k}  # fmt: skip
            out.append(("b", orjson.dumps({"stream": f"{s}@bookTicker", "data": d})))
        k_ = {"t": base // 60000 * 60000, "T": base // 60000 * 60000 + 59999, "s": sym, "i": "1m", "f": 1, "L": 2,
              "o": f"{px:.2f}", "c": f"{px:.2f}", "h": f"{px:.2f}", "l": f"{px:.2f}", "v": "10", "n": 5, "x": False,
              "q": "1000", "V": "5", "Q": "500", "B": "0"}  # fmt: skip
        out.append(
            ("b", orjson.dumps({"stream": f"{s}@kline_1m", "data": {"e": "kline", "E": base, "s": sym, "k": k_}}))
        )
    for st in pm.markets.values():
        w = st.window_at(base)
        assert w is not None
        for k in range(3):
            p = round(0.3 + 0.4 * rng.random(), 2)
            ch = [{"asset_id": w.up_token, "price": f"{p}", "size": f"{rng.randint(1, 500)}", "side": "BUY",
                   "hash": "0x1", "best_bid": f"{p}", "best_ask": f"{p + 0.02:.2f}"},
                  {"asset_id": w.down_token, "price": f"{1 - p - 0.02:.2f}", "size": "50", "side": "BUY",
                   "hash": "0x2", "best_bid": f"{1 - p - 0.02:.2f}", "best_ask": f"{1 - p:.2f}"}]  # fmt: skip
            msg = {"event_type": "price_change", "market": w.condition_id, "timestamp": str(base + 300 * k),
                   "price_changes": ch}  # fmt: skip
            out.append(("p", orjson.dumps(msg)))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    n_markets, n_symbols = 200, 20
    seconds = 10 if quick else 30
    settings = Settings(tick_ms=500, stream_max_age_s=3600)
    bn, pm, names = _setup(n_markets, n_symbols, settings)
    sides = [MarketSides(n, bn.symbols[pm.specs[n].binance_symbol], pm.markets[n]) for n in names]
    builder = StateBuilder(sides, settings.stale_binance_ms, settings.stale_poly_ms, settings.tick_ms)
    rng = random.Random(1)
    frames = [_frames(s, bn, pm, rng) for s in range(seconds)]
    n_frames = sum(len(f) for f in frames)
    with RedisServer() as srv:
        r = redis.Redis.from_url(srv.url)
        info0 = r.info("cpu")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        published = 0
        for s, fr in enumerate(frames):
            half = len(fr) // 2
            for part, tick in ((fr[:half], T0 + s * 1000 + 500), (fr[half:], T0 + (s + 1) * 1000)):
                for venue, raw in part:
                    (bn if venue == "b" else pm)._on_frame(raw)
                published += publish_states(r, builder.build_entries(tick)).added
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        info1 = r.info("cpu")
        redis_cpu = sum(info1[k] - info0[k] for k in ("used_cpu_sys", "used_cpu_user"))
        # flat out: states/s the builder + publisher sustain (no frames)
        t1 = time.perf_counter()
        n_ticks = 20 if quick else 60
        for k in range(n_ticks):
            publish_states(r, builder.build_entries(T0 + (seconds + 1 + k) * 1000))
        flat = n_ticks * n_markets / (time.perf_counter() - t1)
        redis_len = r.xlen(f"fusion:{{{names[0]}}}:states")
        r.close()
    core_share = cpu / seconds
    return {
        "markets": n_markets,
        "binance_symbols": n_symbols,
        "ticks_per_s": 2,
        "frames_per_simulated_s": n_frames / seconds,
        "states_published": published,
        "cpu_s_per_simulated_s": round(core_share, 4),
        "share_of_one_core": round(core_share, 4),
        "share_of_2_core_machine": round(core_share / 2, 4),
        "redis_server_cpu_s_per_simulated_s": round(redis_cpu / seconds, 4),
        "cpu_ms_per_market_per_s": round(1000 * core_share / n_markets, 3),
        "max_markets_per_core_at_2tps": int(n_markets / core_share) if core_share else None,
        "replay_speedup_vs_real_time": round(seconds / wall, 2),
        "states_per_s_flat_out": round(flat),
        "stream_len_check": redis_len,
    }
