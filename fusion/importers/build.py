"""Raw state fields, flags and features of cleaned rows (pure, vectorised).

What the observer computes from its feeds is computed here from the rows, the same way: the Up mid's
5-minute std in time, the Binance 1-minute closes 1/5/10/60 bars back, the last hour's realised volatility,
the Binance price at the window's start, the previous window's end and outcome, the ages of each venue's
data and the staleness flags with the observer's limits; features come from
:func:`common.features.market_features`. A field with a column in the file is *recorded*; one computed
from other columns is *derived*; one with neither is *absent* (NaN). Every state carries
``ORIGIN_IMPORTED`` (or ``ORIGIN_BACKFILLED``) and a ``DERIVED_*`` bit per group of derived fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from common.features import market_features
from common.schema import (
    DERIVED_BINANCE_BOOK,
    DERIVED_BINANCE_FLOW,
    DERIVED_POLY_BOOK,
    N_RAW,
    POLY_BOOK_EMPTY,
    RAW_INDEX,
    STALE_BINANCE,
    STALE_POLY,
)
from fusion.importers.layout import Table

MIN_MS = 60_000
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
FLOW_FIELDS = ("bn_buy_notional", "bn_sell_notional", "bn_net_10s", "bn_net_prev_10s", "bn_trades_10s",
               "bn_large_age_s", "bn_vol_1h", "bn_vol_24h_per_h")  # fmt: skip
_BOOK = {"up_bid_px_0": "up_bid", "up_ask_px_0": "up_ask", "up_bid_sz_0": "up_bid_size",
         "up_ask_sz_0": "up_ask_size", "dn_bid_px_0": "down_bid", "dn_ask_px_0": "down_ask",
         "dn_bid_sz_0": "down_bid_size", "dn_ask_sz_0": "down_ask_size", "up_last_trade_px": "up_last",
         "dn_last_trade_px": "down_last"}  # fmt: skip


@dataclass(slots=True)
class Built:
    ticks: I64
    raw: F64  # (n, N_RAW)
    flags: npt.NDArray[np.int32]
    features: npt.NDArray[np.float32]
    fidelity: dict[str, str]  # raw field -> recorded | derived | absent


def ffill_age(v: F64, ticks: I64) -> tuple[F64, F64]:
    """(values carried forward over NaN, ms since the row that carried them; NaN before the first value)."""
    idx = np.where(np.isfinite(v), np.arange(v.size), -1)
    np.maximum.accumulate(idx, out=idx)
    ok = idx >= 0
    out = np.where(ok, v[np.maximum(idx, 0)], np.nan)
    age = np.where(ok, (ticks - ticks[np.maximum(idx, 0)]).astype(np.float64), np.nan)
    return out, age


def rolling_std_time(x: F64, ticks: I64, span_ms: int) -> tuple[F64, F64]:
    """(population std, count) of the finite values of ``x`` in ``(t - span, t]``, per row."""
    ok = np.isfinite(x)
    v = np.where(ok, x, 0.0)
    c1 = np.concatenate([[0.0], np.cumsum(ok)])
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])
    lo = np.searchsorted(ticks, ticks - span_ms, "right")
    hi = np.arange(1, ticks.size + 1)
    n = c1[hi] - c1[lo]
    mean = np.divide(s1[hi] - s1[lo], n, out=np.zeros_like(n), where=n > 0)
    var = np.divide(s2[hi] - s2[lo], n, out=np.zeros_like(n), where=n > 0) - mean * mean
    return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), np.nan), n


def price_at(ticks: I64, px: F64, at: I64, side: Literal["left", "right"] = "right") -> F64:
    """The last finite price at a time ``<= at`` (``side="right"``) or ``< at`` (``"left"``); NaN if none."""
    ok = np.isfinite(px)
    t, p = ticks[ok], px[ok]
    if t.size == 0:
        return np.full(at.shape, np.nan)
    i = np.searchsorted(t, at, side) - 1
    return np.where(i >= 0, p[np.maximum(i, 0)], np.nan)


def minute_closes(ticks: I64, px: F64) -> tuple[I64, F64]:
    """(bar start, close) of every 1-minute bar from the first price to the last (a bar without a price
    closes at the previous close)."""
    ok = np.isfinite(px)
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0)
    first, last = int(ticks[ok][0]) // MIN_MS * MIN_MS, int(ticks[ok][-1]) // MIN_MS * MIN_MS
    bars = np.arange(first, last + MIN_MS, MIN_MS, dtype=np.int64)
    return bars, price_at(ticks, px, bars + MIN_MS, "left")


def realised_vol_1h(ticks: I64, px: F64) -> F64:
    """Std of the last 60 completed 1-minute simple returns * sqrt(60) (NaN with fewer than 10)."""
    bars, close = minute_closes(ticks, px)
    if bars.size < 3:
        return np.full(ticks.shape, np.nan)
    r = close[1:] / close[:-1] - 1.0
    rbars = bars[1:]
    c = np.concatenate([[0.0], np.cumsum(np.isfinite(r))])
    v = np.nan_to_num(r)
    s1, s2 = np.concatenate([[0.0], np.cumsum(v)]), np.concatenate([[0.0], np.cumsum(v * v)])
    hi = np.searchsorted(rbars, ticks // MIN_MS * MIN_MS, "left")  # returns of completed bars only
    lo = np.maximum(hi - 60, 0)
    n = c[hi] - c[lo]
    mean = np.divide(s1[hi] - s1[lo], n, out=np.zeros_like(n), where=n > 0)
    var = np.divide(s2[hi] - s2[lo], np.maximum(n - 1, 1), out=np.zeros_like(n), where=n > 1)
    var = var - np.divide(n * mean * mean, np.maximum(n - 1, 1), out=np.zeros_like(n), where=n > 1)
    return np.where(n >= 10, np.sqrt(np.maximum(var, 0.0)) * np.sqrt(60.0), np.nan)


def build(tab: Table, ticks: I64, *, stale_binance_ms: int, stale_poly_ms: int, origin_flag: int,
          outcomes: dict[int, float]) -> Built:  # fmt: skip
    """Raw fields, flags and features of rows sorted by unique tick (``outcomes``: window start ms -> 1/0)."""
    n = ticks.size
    raw = np.full((n, N_RAW), np.nan)
    col = RAW_INDEX.__getitem__
    fid = dict.fromkeys(RAW_INDEX, "absent")
    flags = np.full(n, origin_flag, np.int32)

    def put(name: str, v: F64, how: str) -> None:
        raw[:, col(name)] = v
        fid[name] = how if np.isfinite(v).any() else fid[name]

    num = tab.num
    for field, c in _BOOK.items():
        if c in num:
            put(field, num[c], "derived" if c in tab.derived else "recorded")
            if c in tab.derived:
                flags[np.isfinite(num[c])] |= DERIVED_POLY_BOOK
    # a token the file has no prices for: its book from the other token's (Up bid = 1 - Down ask), sizes unknown
    pairs = (("up_bid_px_0", "dn_ask_px_0"), ("up_ask_px_0", "dn_bid_px_0"), ("dn_bid_px_0", "up_ask_px_0"),
             ("dn_ask_px_0", "up_bid_px_0"))  # fmt: skip
    derived_poly = np.zeros(n, bool)
    for dst, src in pairs:
        if _BOOK[dst] in num:
            continue
        miss = np.isnan(raw[:, col(dst)]) & np.isfinite(raw[:, col(src)])
        if miss.any():
            raw[miss, col(dst)] = np.round(1.0 - raw[miss, col(src)], 6)
            derived_poly |= miss
            fid[dst] = "derived" if fid[dst] == "absent" else fid[dst]
    flags[derived_poly] |= DERIVED_POLY_BOOK
    poly_seen = np.isfinite(raw[:, col("up_bid_px_0")]) | np.isfinite(raw[:, col("up_ask_px_0")])
    ws, we = tab.times["window_start"], tab.times["window_end"]
    raw[:, col("pm_start_s")] = ws // 1000
    raw[:, col("pm_end_s")] = we // 1000
    starts = set(np.unique(ws).tolist())
    ends = {int(s): int(e) for s, e in zip(ws.tolist(), we.tolist(), strict=True)}
    prev_by_start = {e: s for s, e in ends.items() if e in starts}  # this start == a previous window's end
    prev_end = np.array([s if s in prev_by_start else np.nan for s in ws.tolist()], dtype=np.float64)
    raw[:, col("pm_prev_end_s")] = prev_end / 1000.0
    raw[:, col("pm_prev_settle_up")] = [outcomes.get(prev_by_start.get(s, -1), np.nan) for s in ws.tolist()]
    for f in ("pm_start_s", "pm_end_s", "pm_prev_end_s", "pm_prev_settle_up"):
        fid[f] = "recorded" if np.isfinite(raw[:, col(f)]).any() else "absent"
    up_mid = (raw[:, col("up_bid_px_0")] + raw[:, col("up_ask_px_0")]) / 2.0
    std, cnt = rolling_std_time(up_mid, ticks, 300_000)
    put("up_mid_std_5m", std, "derived")
    put("up_mid_n_5m", cnt.astype(np.float64), "derived")
    # Binance
    px = num.get("binance_price", np.full(n, np.nan)).copy()
    bid, ask = num.get("binance_bid"), num.get("binance_ask")
    if bid is not None and ask is not None:
        mid = (bid + ask) / 2.0
        px = np.where(np.isfinite(px), px, mid)
    bn_seen = np.isfinite(px)
    put("bn_last_px", px, "derived" if "binance_price" in tab.derived else "recorded")
    if "binance_price" in tab.derived:
        flags[bn_seen] |= DERIVED_BINANCE_BOOK
    for name, c in (("bn_bid", "binance_bid"), ("bn_ask", "binance_ask"), ("bn_bid_sz", "binance_bid_size"),
                    ("bn_ask_sz", "binance_ask_size")):  # fmt: skip
        if c in num:
            put(name, num[c], "recorded")
    for name in ("bn_bid", "bn_ask"):
        miss = np.isnan(raw[:, col(name)]) & bn_seen
        if miss.any():
            raw[miss, col(name)] = px[miss]
            flags[miss] |= DERIVED_BINANCE_BOOK
            fid[name] = "derived" if fid[name] == "absent" else fid[name]
    bar0 = ticks // MIN_MS * MIN_MS
    put("bn_close_0", price_at(ticks, px, ticks), "derived")
    for name, k in (("bn_close_1m", 1), ("bn_close_5m", 5), ("bn_close_10m", 10), ("bn_close_60m", 60)):
        put(name, price_at(ticks, px, bar0 - (k - 1) * MIN_MS, "left"), "derived")
    put("bn_rv_1h", realised_vol_1h(ticks, px), "derived")
    opened = price_at(ticks, px, ws + MIN_MS, "left")  # the close of the window's first bar's first price ...
    first_in = price_at(ticks, px, ws, "left")  # ... or the last price before the window opened
    put("bn_open_px", np.where(np.isfinite(first_in), first_in, opened), "derived")
    for f in FLOW_FIELDS:
        if f in num:
            put(f, num[f], "recorded")
    for f, v in num.items():  # any other raw-field column: recorded as is
        if f in RAW_INDEX and f not in _BOOK:
            put(f, v, "recorded")
    if any(fid[f] == "absent" for f in FLOW_FIELDS):
        flags |= DERIVED_BINANCE_FLOW
    # ages and staleness, as the observer's limits define them
    _, age_b = ffill_age(np.where(bn_seen, 1.0, np.nan), ticks)
    _, age_p = ffill_age(np.where(poly_seen, 1.0, np.nan), ticks)
    put("age_binance_ms", age_b, "derived")
    put("age_poly_ms", age_p, "derived")
    flags[~(age_b <= stale_binance_ms)] |= STALE_BINANCE
    flags[~(age_p <= stale_poly_ms)] |= STALE_POLY
    flags[np.isnan(raw[:, col("up_bid_px_0")]) & np.isnan(raw[:, col("up_ask_px_0")])] |= POLY_BOOK_EMPTY
    feats = market_features(raw, ticks, flags)
    return Built(ticks, raw, flags, feats, fid)
