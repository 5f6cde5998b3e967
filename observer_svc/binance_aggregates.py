"""Per-symbol Binance aggregates in exchange event time. Pure (no IO, no local clock).

Public API::

    agg = SymbolAggregates(symbol, futures=True, with_book=False, flow_half_life_s=60.0,
                           large_trade_multiple=10.0)
    SymbolAggregates.from_settings(symbol, settings, with_book) -> SymbolAggregates
    agg.on_event(ev)                      # AggTrade | Kline | BookTicker | DepthUpdate | DepthSnapshot
    agg.on_trade / on_kline / on_book_ticker / on_depth / apply_snapshot
    agg.backfill_klines(rows)             # REST kline rows (raw lists as Binance returns, or KlineRow)
    agg.fill_raw(x, tick_ms)              # writes exactly the bn_* fields and age_binance_ms of RAW_FIELDS
    agg.flags(tick_ms) -> int             # schema.BINANCE_BOOK_INVALID when the depth book is out of sync
    agg.last_event_ms: int | None         # newest exchange event time (E/T) seen
    agg.book: DepthBook | None

Definitions (all times are exchange times E/T, in ms):
- best bid/ask: the bookTicker, or the depth book when it is valid and newer by update id;
- 1-minute bars from trades (a ``kline_1m`` frame overrides the bar's OHLC/volume when it is at
  least as new as the bar's last trade), kept 24 h in a ring; minutes without trades are flat bars
  of zero volume. Lags are taken relative to the tick's minute (``bn_close_0`` = close as of the tick);
- ``bn_rv_1h`` = std (ddof 0) of the 1-minute simple returns of the last 61 closes (>= 59 needed)
  x sqrt(60); ``bn_vol_1h`` = base volume of the last 60 bars (all 60 needed);
  ``bn_vol_24h_per_h`` = mean hourly volume over the available bars of the last 24 h (>= 60 bars);
- taker buy/sell notionals decay continuously with half-life ``flow_half_life_s``
  (``buyer_is_maker`` => seller-initiated => sell);
- ``bn_net_10s`` / ``bn_net_prev_10s`` / ``bn_trades_10s`` from per-second buckets of trade time;
- a trade is large when its notional > ``large_trade_multiple`` x the median of the last 500
  notionals (median refreshed every 50 trades, from 20 trades on).
NaN means unknown (nothing seen yet, or not enough history).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from common.schema import BINANCE_BOOK_INVALID, RAW_INDEX
from observer_svc.binance_book import DepthBook
from observer_svc.binance_wire import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    DepthUpdate,
    Kline,
    KlineRow,
    parse_klines_rest,
)

N_BARS = 1440  # 24 h of completed 1-minute bars
MINUTE_MS = 60_000
LARGE_WINDOW = 500
MEDIAN_EVERY = 50
MIN_LARGE_SAMPLES = 20
_NB = 32  # per-second buckets (power of 2 >= 20)
_NAN = math.nan
_exp = math.exp

I_BID, I_BID_SZ, I_ASK, I_ASK_SZ = (RAW_INDEX[k] for k in ("bn_bid", "bn_bid_sz", "bn_ask", "bn_ask_sz"))
I_LAST = RAW_INDEX["bn_last_px"]
I_CLOSES = tuple(
    (lag, RAW_INDEX[k])
    for lag, k in (
        (0, "bn_close_0"),
        (1, "bn_close_1m"),
        (5, "bn_close_5m"),
        (10, "bn_close_10m"),
        (60, "bn_close_60m"),
    )
)
I_RV, I_V1H, I_V24 = RAW_INDEX["bn_rv_1h"], RAW_INDEX["bn_vol_1h"], RAW_INDEX["bn_vol_24h_per_h"]
I_BUY, I_SELL = RAW_INDEX["bn_buy_notional"], RAW_INDEX["bn_sell_notional"]
I_NET, I_NETP, I_CNT = RAW_INDEX["bn_net_10s"], RAW_INDEX["bn_net_prev_10s"], RAW_INDEX["bn_trades_10s"]
I_LARGE, I_AGE = RAW_INDEX["bn_large_age_s"], RAW_INDEX["age_binance_ms"]
# the raw fields fill_raw writes (bn_open_px depends on the market's window: the state builder writes it)
FILLED_FIELDS = tuple(k for k in RAW_INDEX if k.startswith("bn_") and k != "bn_open_px") + ("age_binance_ms",)
_SQRT60 = math.sqrt(60.0)


class SymbolAggregates:
    """Everything the state needs from one Binance symbol, updated per event."""

    def __init__(
        self,
        symbol: str,
        *,
        futures: bool = True,
        with_book: bool = False,
        flow_half_life_s: float = 60.0,
        large_trade_multiple: float = 10.0,
    ) -> None:
        self.symbol = symbol.upper()
        self.book: DepthBook | None = DepthBook(futures) if with_book else None
        self.last_event_ms: int | None = None
        self.trades = 0
        # last price
        self.last_px = _NAN
        self._last_px_ms = -1
        # bookTicker
        self.bt_u = -1
        self.bt = (_NAN, _NAN, _NAN, _NAN)
        # bars: ring of completed minutes + the current one
        self._rmin = np.full(N_BARS, -1, dtype=np.int64)
        self._rc = np.full(N_BARS, _NAN)
        self._rv = np.zeros(N_BARS)
        self._rh = np.full(N_BARS, _NAN)
        self._rl = np.full(N_BARS, _NAN)
        self._ro = np.full(N_BARS, _NAN)
        self.cur_min = -1
        self.cur_o = self.cur_h = self.cur_l = self.cur_c = _NAN
        self.cur_v = 0.0
        self._cur_t_ms = -1  # last trade time in the current bar
        self._cur_k_ms = -1  # last kline E applied to the current bar
        self._ver = 0  # bumped on every ring write (invalidates the 24 h cache)
        self._c24: tuple[int, int, int, float, int] = (-1, -1, -1, 0.0, 0)  # (mt, cur_min, ver, sum_v, n)
        # flow
        self._k = math.log(2.0) / (flow_half_life_s * 1000.0)
        self.buy = 0.0
        self.sell = 0.0
        self._flow_ms = -1
        # per-second buckets
        self._bsec = [-1] * _NB
        self._bnet = [0.0] * _NB
        self._bcnt = [0] * _NB
        # large trades
        self._mult = large_trade_multiple
        self._ring = [0.0] * LARGE_WINDOW
        self._rn = 0
        self._thr = math.inf
        self.last_large_ms = -1

    @classmethod
    def from_settings(cls, symbol: str, settings: Any, with_book: bool) -> SymbolAggregates:
        return cls(
            symbol,
            futures=settings.binance_kind == "futures",
            with_book=with_book,
            flow_half_life_s=settings.flow_half_life_s,
            large_trade_multiple=settings.large_trade_multiple,
        )

    # ------------------------------------------------------------------ events
    def on_event(self, ev: object) -> None:
        t = type(ev)
        if t is AggTrade:
            self.on_trade(ev)  # type: ignore[arg-type]
        elif t is BookTicker:
            self.on_book_ticker(ev)  # type: ignore[arg-type]
        elif t is DepthUpdate:
            self.on_depth(ev)  # type: ignore[arg-type]
        elif t is Kline:
            self.on_kline(ev)  # type: ignore[arg-type]
        elif t is DepthSnapshot:
            self.apply_snapshot(ev)  # type: ignore[arg-type]

    def _seen(self, e: int) -> None:
        le = self.last_event_ms
        if le is None or e > le:
            self.last_event_ms = e

    def on_trade(self, ev: AggTrade) -> None:
        ts, p, q = ev.trade_time_ms, ev.price, ev.qty
        e = ev.event_time_ms
        le = self.last_event_ms
        if le is None or e > le:
            self.last_event_ms = e
        self.trades += 1
        n = p * q
        if ts >= self._last_px_ms:
            self.last_px = p
            self._last_px_ms = ts
        # bar
        m = ts // MINUTE_MS
        if m == self.cur_min:
            if p > self.cur_h:
                self.cur_h = p
            if p < self.cur_l:
                self.cur_l = p
            if ts >= self._cur_t_ms:
                self.cur_c = p
                self._cur_t_ms = ts
            self.cur_v += q
        elif m > self.cur_min:
            self._roll(m)
            self.cur_o = self.cur_h = self.cur_l = self.cur_c = p
            self.cur_v = q
            self._cur_t_ms = ts
        else:
            self._late_trade(m, p, q)
        # decayed flow
        dt = ts - self._flow_ms
        sell = ev.buyer_is_maker
        if dt >= 0:
            if dt and self._flow_ms >= 0:
                f = _exp(-self._k * dt)
                self.buy *= f
                self.sell *= f
            self._flow_ms = ts
            if sell:
                self.sell += n
            else:
                self.buy += n
        else:
            w = n * _exp(self._k * dt)
            if sell:
                self.sell += w
            else:
                self.buy += w
        # per-second buckets
        s = ts // 1000
        i = s & (_NB - 1)
        bs = self._bsec[i]
        if bs != s:
            if bs > s:
                s = -2  # older than the ring: not counted
            else:
                self._bsec[i] = s
                self._bnet[i] = 0.0
                self._bcnt[i] = 0
        if s != -2:
            self._bnet[i] += -n if sell else n
            self._bcnt[i] += 1
        # large trades
        if n > self._thr and ts > self.last_large_ms:
            self.last_large_ms = ts
        rn = self._rn
        self._ring[rn % LARGE_WINDOW] = n
        rn += 1
        self._rn = rn
        if rn >= MIN_LARGE_SAMPLES and (rn == MIN_LARGE_SAMPLES or rn % MEDIAN_EVERY == 0):
            vals = sorted(self._ring[: min(rn, LARGE_WINDOW)])
            k = len(vals)
            med = vals[k // 2] if k % 2 else 0.5 * (vals[k // 2 - 1] + vals[k // 2])
            self._thr = self._mult * med

    def on_book_ticker(self, ev: BookTicker) -> None:
        if ev.event_time_ms is not None:
            self._seen(ev.event_time_ms)
        if ev.update_id >= self.bt_u:
            self.bt_u = ev.update_id
            self.bt = (ev.bid, ev.bid_qty, ev.ask, ev.ask_qty)

    def on_depth(self, ev: DepthUpdate) -> bool:
        """Apply a depth update; returns True when the book needs a (new) snapshot."""
        self._seen(ev.event_time_ms)
        if self.book is None:
            return False
        self.book.on_update(ev)
        return self.book.needs_snapshot

    def apply_snapshot(self, snap: DepthSnapshot) -> bool:
        if self.book is None:
            self.book = DepthBook(futures=True)
        return self.book.apply_snapshot(snap)

    def on_kline(self, ev: Kline) -> None:
        self._seen(ev.event_time_ms)
        m = ev.open_ms // MINUTE_MS
        e = ev.event_time_ms
        if m > self.cur_min:
            self._roll(m)
            self._set_cur(ev.open, ev.high, ev.low, ev.close, ev.volume)
            self._cur_t_ms = -1
            self._cur_k_ms = e
        elif m == self.cur_min:
            if e >= self._cur_t_ms and e >= self._cur_k_ms:
                self._set_cur(ev.open, ev.high, ev.low, ev.close, ev.volume)
                self._cur_k_ms = e
            else:  # older than the bar's last trade: keep the newer close, merge the rest
                self.cur_o = ev.open
                self.cur_h = max(self.cur_h, ev.high)
                self.cur_l = min(self.cur_l, ev.low)
                self.cur_v = max(self.cur_v, ev.volume)
        else:
            self._ring_set(m, ev.open, ev.high, ev.low, ev.close, ev.volume)
            return
        if e >= self._last_px_ms:
            self.last_px = ev.close
            self._last_px_ms = e

    def backfill_klines(self, rows: list[Any]) -> int:
        """Warm the bars up from REST kline rows (oldest first); returns the number of rows used."""
        parsed = rows if rows and isinstance(rows[0], KlineRow) else parse_klines_rest(rows)
        used = 0
        for r in parsed:
            m = r.open_ms // MINUTE_MS
            if m > self.cur_min:
                self._roll(m)
                self._set_cur(r.open, r.high, r.low, r.close, r.volume)
                self._cur_t_ms = self._cur_k_ms = -1
            elif m == self.cur_min:
                self.cur_o = r.open
                self.cur_h = max(self.cur_h, r.high)
                self.cur_l = min(self.cur_l, r.low)
                self.cur_v = max(self.cur_v, r.volume)
                if self._cur_t_ms < 0 and self._cur_k_ms < 0:
                    self.cur_c = r.close
            elif not self._ring_set(m, r.open, r.high, r.low, r.close, r.volume):
                continue
            used += 1
        if math.isnan(self.last_px) and self.cur_min >= 0:
            self.last_px = self.cur_c
        return used

    # ------------------------------------------------------------------ bars
    def _set_cur(self, o: float, h: float, lo: float, c: float, v: float) -> None:
        self.cur_o, self.cur_h, self.cur_l, self.cur_c, self.cur_v = o, h, lo, c, v

    def _roll(self, m: int) -> None:
        cm = self.cur_min
        if cm >= 0:
            i = cm % N_BARS
            self._rmin[i] = cm
            self._ro[i], self._rh[i], self._rl[i], self._rc[i], self._rv[i] = (
                self.cur_o,
                self.cur_h,
                self.cur_l,
                self.cur_c,
                self.cur_v,
            )
            gap = min(m - cm - 1, N_BARS)
            if gap > 0:  # minutes without trades: flat bars of zero volume
                mins = np.arange(m - gap, m, dtype=np.int64)
                idx = mins % N_BARS
                self._rmin[idx] = mins
                self._ro[idx] = self._rh[idx] = self._rl[idx] = self._rc[idx] = self.cur_c
                self._rv[idx] = 0.0
        self.cur_min = m
        self._cur_k_ms = -1
        self._ver += 1

    def _ring_set(self, m: int, o: float, h: float, lo: float, c: float, v: float) -> bool:
        if m <= self.cur_min - N_BARS or m >= self.cur_min:
            return False
        i = m % N_BARS
        self._rmin[i] = m
        self._ro[i], self._rh[i], self._rl[i], self._rc[i], self._rv[i] = o, h, lo, c, v
        self._ver += 1
        return True

    def _late_trade(self, m: int, p: float, q: float) -> None:
        i = m % N_BARS
        if self._rmin[i] == m:
            self._ver += 1
            self._rv[i] += q
            self._rh[i] = max(self._rh[i], p)
            self._rl[i] = min(self._rl[i], p)

    def bars(self, tick_ms: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(close, volume, valid) of the ``n`` minutes ending with the tick's minute (oldest first)."""
        cm = self.cur_min
        mt = max(tick_ms // MINUTE_MS, cm)
        mins = np.arange(mt - n + 1, mt + 1, dtype=np.int64)
        idx = mins % N_BARS
        valid = self._rmin[idx] == mins
        c = np.where(valid, self._rc[idx], _NAN)
        v = np.where(valid, self._rv[idx], 0.0)
        k = mt - cm + 1  # minutes >= the current bar: flat at the current close
        if 0 < k <= n:
            c[-k:] = self.cur_c
            v[-k:] = 0.0
            v[-k] = self.cur_v
            valid[-k:] = True
        elif k > n:
            c[:] = self.cur_c
            v[:] = 0.0
            valid[:] = True
        return c, v, valid

    def open_at(self, start_ms: int) -> float:
        """Open of the 1-minute bar starting at the minute of ``start_ms`` (the Binance price when a
        Polymarket window opened: its strike proxy); NaN when that bar is not (or no longer) known."""
        m = start_ms // MINUTE_MS
        if m == self.cur_min:
            return float(self.cur_o)
        if self.cur_min - N_BARS < m < self.cur_min and self._rmin[m % N_BARS] == m:
            return float(self._ro[m % N_BARS])
        return _NAN

    def _vol24(self, tick_ms: int) -> tuple[float, int]:
        """(base volume, available bars) over the 1440 minutes ending with the tick's minute."""
        cm = self.cur_min
        mt = max(tick_ms // MINUTE_MS, cm)
        lo = mt - N_BARS + 1
        key = self._c24
        if key[0] == mt and key[1] == cm and key[2] == self._ver:
            ring_v, ring_n = key[3], key[4]
        else:  # completed bars only change on a roll or a ring write: cache their part
            mins = np.arange(lo, cm, dtype=np.int64)
            idx = mins % N_BARS
            ok = self._rmin[idx] == mins
            ring_v, ring_n = float(self._rv[idx][ok].sum()), int(ok.sum())
            self._c24 = (mt, cm, self._ver, ring_v, ring_n)
        k = min(mt - max(cm, lo) + 1, N_BARS)  # the current bar and the flat minutes after it
        return ring_v + (self.cur_v if cm >= lo else 0.0), ring_n + k

    # ------------------------------------------------------------------ output
    def best(self) -> tuple[float, float, float, float]:
        """(bid, bid_qty, ask, ask_qty) from the newer of bookTicker / valid depth book."""
        bk = self.book
        if bk is not None and bk.valid and bk.last_update_id > self.bt_u:
            return bk.top()
        return self.bt

    def flags(self, tick_ms: int) -> int:
        return BINANCE_BOOK_INVALID if self.book is not None and not self.book.valid else 0

    def fill_raw(self, x: np.ndarray, tick_ms: int) -> None:
        """Write the ``bn_*`` fields and ``age_binance_ms`` of ``x`` (a RAW_FIELDS row) as of ``tick_ms``."""
        x[I_BID], x[I_BID_SZ], x[I_ASK], x[I_ASK_SZ] = self.best()
        x[I_LAST] = self.last_px
        cm = self.cur_min
        if cm < 0:
            for _, j in I_CLOSES:
                x[j] = _NAN
            x[I_RV] = x[I_V1H] = x[I_V24] = _NAN
        else:
            c, v, valid = self.bars(tick_ms, 61)
            for lag, j in I_CLOSES:
                x[j] = c[-1 - lag]
            pair = valid[1:] & valid[:-1]
            if pair.sum() >= 59:
                r = c[1:][pair] / c[:-1][pair] - 1.0
                x[I_RV] = float(r.std()) * _SQRT60
            else:
                x[I_RV] = _NAN
            x[I_V1H] = float(v[-60:].sum()) if valid[-60:].all() else _NAN
            vol, n24 = self._vol24(tick_ms)
            x[I_V24] = vol * 60.0 / n24 if n24 >= 60 else _NAN
        if self._flow_ms >= 0:
            dt = tick_ms - self._flow_ms
            f = _exp(-self._k * dt) if dt > 0 else 1.0
            x[I_BUY], x[I_SELL] = self.buy * f, self.sell * f
            sl = (tick_ms - 1) // 1000
            bsec, bnet, bcnt = self._bsec, self._bnet, self._bcnt
            net = prev = 0.0
            cnt = 0
            for s in range(sl - 19, sl + 1):
                i = s & (_NB - 1)
                if bsec[i] == s:
                    if s > sl - 10:
                        net += bnet[i]
                        cnt += bcnt[i]
                    else:
                        prev += bnet[i]
            x[I_NET], x[I_NETP], x[I_CNT] = net, prev, cnt
        else:
            x[I_BUY] = x[I_SELL] = x[I_NET] = x[I_NETP] = x[I_CNT] = _NAN
        x[I_LARGE] = max(0.0, (tick_ms - self.last_large_ms) / 1000.0) if self.last_large_ms >= 0 else _NAN
        x[I_AGE] = float(tick_ms - self.last_event_ms) if self.last_event_ms is not None else _NAN
