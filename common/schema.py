"""Versioned msgpack schemas of the messages on the streams: market states and hindsight labels.

A message is a msgpack map whose field ``v`` is the schema version. Numeric payloads are
packed as little-endian binary arrays (``x``, ``f``, ``r`` ...) whose element names are fixed
by the version (``RAW_FIELDS`` below): one ``frombuffer`` turns a million states into a matrix,
and ``fusion streams tail`` names every element for people.

Guarantees: ``encode_*`` never emits a message above ``MAX_MESSAGE_BYTES``; ``decode_*`` raises
:class:`SchemaError` (with the reason) for anything that is not a valid message of a known
version, and never evaluates code (msgpack only, no pickle).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

STATE_VERSION = 2  # v2 added bn_open_px (v1 states are rejected as an unknown version)
LABEL_VERSION = 1
TRADE_VERSION = 1  # a trader's record (msgpack map: v, trader, type, ...; see trader_svc.recovery)
MAX_MESSAGE_BYTES = 16 * 1024
BOOK_LEVELS = 5

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


class SchemaError(ValueError):
    """A message that is not a valid state/label of a known schema version."""


def _book_fields(token: str) -> list[str]:
    names: list[str] = []
    for side in ("bid", "ask"):
        names += [f"{token}_{side}_px_{i}" for i in range(BOOK_LEVELS)]
        names += [f"{token}_{side}_sz_{i}" for i in range(BOOK_LEVELS)]
    return names


# Raw numeric fields of a state, schema v2. NaN means "not known at this tick".
RAW_FIELDS: tuple[str, ...] = tuple(
    _book_fields("up")  # Polymarket Up-token book, best level first (price, shares)
    + _book_fields("dn")  # Polymarket Down-token book
    + [
        "up_last_trade_px",
        "dn_last_trade_px",
        "pm_start_s",  # current Polymarket window start (unix s)
        "pm_end_s",  # current Polymarket window end (unix s)
        "pm_settle_up",  # 1.0 / 0.0 once the market resolved (Up won / lost), else NaN
        "pm_prev_end_s",  # end of the previous window of a rolling series (unix s), else NaN
        "pm_prev_settle_up",  # 1.0 / 0.0 once that previous window resolved, else NaN
        "up_mid_std_5m",  # std of the Up mid sampled each tick over the last 300 s
        "up_mid_n_5m",  # number of samples behind up_mid_std_5m
        "bn_bid",
        "bn_bid_sz",
        "bn_ask",
        "bn_ask_sz",
        "bn_last_px",
        "bn_close_0",  # close of the current (in-progress) 1-minute bar
        "bn_close_1m",  # close 1, 5, 10 and 60 bars back
        "bn_close_5m",
        "bn_close_10m",
        "bn_close_60m",
        "bn_rv_1h",  # std of 1-minute simple returns over the last 60 bars * sqrt(60)
        "bn_vol_1h",  # base volume of the last 60 bars
        "bn_vol_24h_per_h",  # mean hourly base volume over the available last 24 h
        "bn_buy_notional",  # exponentially decayed taker-buy notional (USD)
        "bn_sell_notional",  # exponentially decayed taker-sell notional (USD)
        "bn_net_10s",  # signed taker notional in the last 10 s
        "bn_net_prev_10s",  # signed taker notional in the 10 s before that
        "bn_trades_10s",  # trade count in the last 10 s
        "bn_large_age_s",  # seconds since the last large trade (NaN: none seen)
        "age_binance_ms",  # tick time minus the newest Binance event time
        "age_poly_ms",  # tick time minus the newest Polymarket event time
        "bn_open_px",  # Binance price at the current Polymarket window's start (its 1-minute bar's open)
    ]
)
RAW_INDEX: dict[str, int] = {name: i for i, name in enumerate(RAW_FIELDS)}
N_RAW = len(RAW_FIELDS)

# Staleness / condition flags (bitmask ``st``)
STALE_BINANCE = 1  # Binance data older than the staleness limit
STALE_POLY = 2  # Polymarket data older than the staleness limit
NO_PM_MARKET = 4  # no current Polymarket market known
BINANCE_BOOK_INVALID = 8  # local depth book out of sync (awaiting a snapshot)
POLY_BOOK_EMPTY = 16  # Up book has neither bids nor asks
PM_RESOLVED = 32  # the current Polymarket market has resolved
# Provenance and fidelity (no bit set: a live, fully recorded state). A state written by ``fusion import`` /
# ``fusion backfill`` carries its origin and which groups of raw fields were derived rather than recorded;
# fields that were absent are NaN as always. The per-field detail is in the import's manifest.
ORIGIN_IMPORTED = 64  # written by ``fusion import`` from a user's recording
ORIGIN_BACKFILLED = 128  # written by ``fusion backfill`` from public history
DERIVED_POLY_BOOK = 256  # Polymarket tops derived (e.g. from a price history or one token's book), sizes unknown
DERIVED_BINANCE_BOOK = 512  # Binance bid/ask derived from a last price or a 1-minute bar, not a live book
DERIVED_BINANCE_FLOW = 1024  # Binance trade aggregates derived from bars or absent, not from every trade
ORIGIN_MASK = ORIGIN_IMPORTED | ORIGIN_BACKFILLED
DERIVED_MASK = DERIVED_POLY_BOOK | DERIVED_BINANCE_BOOK | DERIVED_BINANCE_FLOW
FLAG_NAMES = {
    STALE_BINANCE: "stale_binance",
    STALE_POLY: "stale_poly",
    NO_PM_MARKET: "no_pm_market",
    BINANCE_BOOK_INVALID: "binance_book_invalid",
    POLY_BOOK_EMPTY: "poly_book_empty",
    PM_RESOLVED: "pm_resolved",
    ORIGIN_IMPORTED: "imported",
    ORIGIN_BACKFILLED: "backfilled",
    DERIVED_POLY_BOOK: "derived_poly_book",
    DERIVED_BINANCE_BOOK: "derived_binance_book",
    DERIVED_BINANCE_FLOW: "derived_binance_flow",
}


def flag_names(st: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if st & bit]


@dataclass(frozen=True, slots=True)
class PolymarketWindow:
    """The Polymarket market a state refers to."""

    slug: str
    condition_id: str
    up_token: str
    down_token: str
    start_ms: int
    end_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "cid": self.condition_id,
            "up": self.up_token,
            "dn": self.down_token,
            "start": self.start_ms,
            "end": self.end_ms,
        }

    @staticmethod
    def from_wire(d: Any) -> PolymarketWindow:
        if not isinstance(d, dict):
            raise SchemaError("pm is not a map")
        try:
            return PolymarketWindow(
                slug=str(d["slug"]),
                condition_id=str(d["cid"]),
                up_token=str(d["up"]),
                down_token=str(d["dn"]),
                start_ms=int(d["start"]),
                end_ms=int(d["end"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaError(f"bad pm field: {e!r}") from e


@dataclass(slots=True)
class State:
    """One fused market state (one market, one tick)."""

    market: str
    tick_ms: int
    raw: F64  # shape (N_RAW,), float64
    features: F32  # shape (n_features,), float32
    feature_set: str
    flags: int = 0
    pm: PolymarketWindow | None = None
    version: int = STATE_VERSION

    def get(self, name: str) -> float:
        return float(self.raw[RAW_INDEX[name]])

    def named_raw(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(RAW_FIELDS, self.raw, strict=True)}


def entry_id(tick_ms: int) -> str:
    """Stream entry ID of a tick: ``<tick_ms>-0`` (replicas publish identical IDs)."""
    return f"{tick_ms}-0"


def tick_of_entry_id(eid: str | bytes) -> int:
    s = eid.decode() if isinstance(eid, bytes) else eid
    ms, _, _ = s.partition("-")
    return int(ms)


def _check_size(b: bytes, what: str) -> bytes:
    if len(b) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"{what} of {len(b)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return b


def encode_state(s: State) -> bytes:
    raw = np.ascontiguousarray(s.raw, dtype="<f8")
    if raw.shape != (N_RAW,):
        raise SchemaError(f"raw has shape {raw.shape}, expected ({N_RAW},)")
    msg = {
        "v": STATE_VERSION,
        "m": s.market,
        "t": int(s.tick_ms),
        "pm": s.pm.to_wire() if s.pm is not None else None,
        "x": raw.tobytes(),
        "fs": s.feature_set,
        "f": np.ascontiguousarray(s.features, dtype="<f4").tobytes(),
        "st": int(s.flags),
    }
    return _check_size(msgpack.packb(msg, use_bin_type=True), "state")


def _unpack_map(b: bytes, what: str) -> dict[str, Any]:
    if not isinstance(b, bytes | bytearray | memoryview):
        raise SchemaError(f"{what} payload is {type(b).__name__}, not bytes")
    if len(b) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"{what} of {len(b)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        d = msgpack.unpackb(b, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
    except Exception as e:  # msgpack raises several unrelated exception types
        raise SchemaError(f"{what} is not msgpack: {e.__class__.__name__}: {e}") from e
    if not isinstance(d, dict):
        raise SchemaError(f"{what} is not a msgpack map")
    return d


def decode_state(b: bytes) -> State:
    d = _unpack_map(b, "state")
    v = d.get("v")
    if v != STATE_VERSION:
        raise SchemaError(f"unknown state version {v!r}")
    try:
        market, tick, x, fs, f, st = d["m"], d["t"], d["x"], d["fs"], d["f"], d["st"]
    except KeyError as e:
        raise SchemaError(f"state lacks field {e.args[0]!r}") from e
    if not isinstance(market, str) or not isinstance(tick, int) or not isinstance(fs, str):
        raise SchemaError("state m/t/fs have wrong types")
    if not isinstance(x, bytes) or len(x) != 8 * N_RAW:
        raise SchemaError(f"state x must be {8 * N_RAW} bytes")
    if not isinstance(f, bytes) or len(f) % 4:
        raise SchemaError("state f must be float32 bytes")
    if not isinstance(st, int):
        raise SchemaError("state st must be an int")
    pm_wire = d.get("pm")
    pm = PolymarketWindow.from_wire(pm_wire) if pm_wire is not None else None
    return State(
        market=market,
        tick_ms=tick,
        raw=np.frombuffer(x, dtype="<f8").copy(),
        features=np.frombuffer(f, dtype="<f4").copy(),
        feature_set=fs,
        flags=st,
        pm=pm,
    )


@dataclass(slots=True)
class StateColumns:
    """Many states of one market as columns (for labelling, training, replay)."""

    tick_ms: npt.NDArray[np.int64]
    raw: F64  # (N, N_RAW)
    features: F32  # (N, n_features)
    flags: npt.NDArray[np.int32]
    slugs: Sequence[str] = field(default_factory=list)  # per row; "" when no market known

    def __len__(self) -> int:
        return int(self.tick_ms.shape[0])

    def rows(self, begin: int, end: int) -> StateColumns:
        """Rows ``[begin, end)`` (numpy views, no copy)."""
        return StateColumns(self.tick_ms[begin:end], self.raw[begin:end], self.features[begin:end],
                            self.flags[begin:end], self.slugs[begin:end])  # fmt: skip


def _columns(
    ticks: list[int], xs: list[bytes], fs: list[bytes], sts: list[int], slugs: list[str], nf: int | None
) -> StateColumns:
    """Columns from per-state raw/feature bytes (one join + frombuffer per column)."""
    n = len(ticks)
    return StateColumns(
        tick_ms=np.asarray(ticks, dtype=np.int64),
        raw=np.frombuffer(b"".join(xs), dtype="<f8").reshape(n, N_RAW).astype(np.float64),
        features=np.frombuffer(b"".join(fs), dtype="<f4").reshape(n, nf or 0).astype(np.float32),
        flags=np.asarray(sts, dtype=np.int32),
        slugs=slugs,
    )


def decode_states_columns(payloads: Sequence[bytes]) -> tuple[StateColumns, list[tuple[int, str]]]:
    """Decode many state payloads into columns. Returns (columns, [(index, reason)] of rejects)."""
    ticks: list[int] = []
    xs: list[bytes] = []
    fs: list[bytes] = []
    sts: list[int] = []
    slugs: list[str] = []
    bad: list[tuple[int, str]] = []
    nf: int | None = None
    for i, b in enumerate(payloads):
        try:
            s = decode_state(b)
        except SchemaError as e:
            bad.append((i, str(e)))
            continue
        if nf is None:
            nf = s.features.shape[0]
        elif s.features.shape[0] != nf:
            bad.append((i, f"feature width {s.features.shape[0]} != {nf}"))
            continue
        ticks.append(s.tick_ms)
        xs.append(s.raw.tobytes())
        fs.append(s.features.astype("<f4").tobytes())
        sts.append(s.flags)
        slugs.append(s.pm.slug if s.pm else "")
    return _columns(ticks, xs, fs, sts, slugs, nf), bad


# ---------------------------------------------------------------------------- labels

ACTIONS: tuple[str, ...] = ("hold", "buy_up", "buy_down")
EXIT_FUTURE_BID = 0  # exit at the bid of the state at t + h
EXIT_SETTLEMENT = 1  # the market resolved before t + h: exit at the settlement value (1 or 0)
EXIT_INVALID = 255  # future missing or stale: no reward


@dataclass(slots=True)
class Label:
    """Hindsight rewards of one state for each horizon and action.

    ``rewards[h, a]`` is the return on $1 spent at t (buy at the ask, exit at the future bid or
    the settlement value, net of taker fees); hold is 0. ``best[h]`` is the argmax action or -1
    when ``valid[h]`` is false.
    """

    market: str
    tick_ms: int
    horizons_s: tuple[int, ...]
    rewards: F32  # (H, 3)
    best: npt.NDArray[np.int8]  # (H,)
    valid: npt.NDArray[np.uint8]  # (H,)
    exit_kind: npt.NDArray[np.uint8]  # (H,)
    version: int = LABEL_VERSION


def encode_label(lb: Label) -> bytes:
    h = len(lb.horizons_s)
    r = np.ascontiguousarray(lb.rewards, dtype="<f4")
    if r.shape != (h, len(ACTIONS)):
        raise SchemaError(f"rewards shape {r.shape} != ({h}, {len(ACTIONS)})")
    msg = {
        "v": LABEL_VERSION,
        "m": lb.market,
        "t": int(lb.tick_ms),
        "h": [int(x) for x in lb.horizons_s],
        "r": r.tobytes(),
        "b": np.ascontiguousarray(lb.best, dtype="i1").tobytes(),
        "ok": np.ascontiguousarray(lb.valid, dtype="u1").tobytes(),
        "xs": np.ascontiguousarray(lb.exit_kind, dtype="u1").tobytes(),
    }
    return _check_size(msgpack.packb(msg, use_bin_type=True), "label")


def decode_label(b: bytes) -> Label:
    d = _unpack_map(b, "label")
    if d.get("v") != LABEL_VERSION:
        raise SchemaError(f"unknown label version {d.get('v')!r}")
    try:
        market, tick, hs, r, best, ok, xs = d["m"], d["t"], d["h"], d["r"], d["b"], d["ok"], d["xs"]
    except KeyError as e:
        raise SchemaError(f"label lacks field {e.args[0]!r}") from e
    if not isinstance(market, str) or not isinstance(tick, int) or not isinstance(hs, list):
        raise SchemaError("label m/t/h have wrong types")
    n = len(hs)
    if not all(isinstance(x, int) for x in hs):
        raise SchemaError("label horizons must be ints")
    for name, buf, width in (("r", r, 4 * 3 * n), ("b", best, n), ("ok", ok, n), ("xs", xs, n)):
        if not isinstance(buf, bytes) or len(buf) != width:
            raise SchemaError(f"label {name} must be {width} bytes")
    return Label(
        market=market,
        tick_ms=tick,
        horizons_s=tuple(hs),
        rewards=np.frombuffer(r, dtype="<f4").reshape(n, 3).copy(),
        best=np.frombuffer(best, dtype="i1").copy(),
        valid=np.frombuffer(ok, dtype="u1").copy(),
        exit_kind=np.frombuffer(xs, dtype="u1").copy(),
    )


def iter_named(raw: Iterable[float]) -> Iterable[tuple[str, float]]:
    return zip(RAW_FIELDS, raw, strict=True)


@dataclass(slots=True)
class LabelColumns:
    """Labels of many states of one market as columns; row i labels the state at ``tick_ms[i]``."""

    tick_ms: npt.NDArray[np.int64]  # (N,)
    horizons_s: tuple[int, ...]
    rewards: F32  # (N, H, 3): return on $1 per action (hold, buy_up, buy_down), net of fees
    best: npt.NDArray[np.int8]  # (N, H): argmax action, -1 when invalid
    valid: npt.NDArray[np.uint8]  # (N, H)
    exit_kind: npt.NDArray[np.uint8]  # (N, H): EXIT_FUTURE_BID | EXIT_SETTLEMENT | EXIT_INVALID

    def __len__(self) -> int:
        return int(self.tick_ms.shape[0])

    def row(self, i: int, market: str) -> Label:
        return Label(
            market=market,
            tick_ms=int(self.tick_ms[i]),
            horizons_s=self.horizons_s,
            rewards=self.rewards[i],
            best=self.best[i],
            valid=self.valid[i],
            exit_kind=self.exit_kind[i],
        )


def decode_states_columns_fast(payloads: Sequence[bytes]) -> tuple[StateColumns, list[tuple[int, str]]]:
    """Same result and rejects as :func:`decode_states_columns`, several times faster.

    One ``unpackb`` and one combined type check per payload (no ``State`` objects), then one
    ``frombuffer`` over the joined raw vectors; a payload failing the quick check is decoded by
    :func:`decode_state` for its exact reason.
    """
    unpackb = msgpack.unpackb
    ticks: list[int] = []
    xs: list[bytes] = []
    fs: list[bytes] = []
    sts: list[int] = []
    slugs: list[str] = []
    bad: list[tuple[int, str]] = []
    nf: int | None = None
    xlen = 8 * N_RAW
    for i, b in enumerate(payloads):
        try:
            if len(b) > MAX_MESSAGE_BYTES:
                raise SchemaError("too large")
            d = unpackb(b, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
            x, f, tick, st, pm = d["x"], d["f"], d["t"], d["st"], d.get("pm")
            ok = (
                d["v"] == STATE_VERSION
                and type(x) is bytes
                and len(x) == xlen
                and type(f) is bytes
                and not len(f) % 4
                and type(tick) is int
                and type(st) is int
                and type(d["m"]) is str
                and type(d["fs"]) is str
            )
            if ok and pm is not None:
                slug = str(pm["slug"])
                pm["cid"], pm["up"], pm["dn"], int(pm["start"]), int(pm["end"])
            else:
                slug = ""
        except Exception:  # any failure: let decode_state name the reason
            ok = False
        if not ok:  # the exact checks: a reason for the reject (or, should they differ, the state)
            try:
                s = decode_state(b)
            except SchemaError as e:
                bad.append((i, str(e)))
                continue
            x, f, tick, st = s.raw.astype("<f8").tobytes(), s.features.astype("<f4").tobytes(), s.tick_ms, s.flags
            slug = s.pm.slug if s.pm else ""
        width = len(f) // 4
        if nf is None:
            nf = width
        elif width != nf:
            bad.append((i, f"feature width {width} != {nf}"))
            continue
        ticks.append(tick)
        xs.append(x)
        fs.append(f)
        sts.append(st)
        slugs.append(slug)
    return _columns(ticks, xs, fs, sts, slugs, nf), bad
