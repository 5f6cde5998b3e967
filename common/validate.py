"""One validator of stream entries: is this state (or label) usable as entry ``id`` of market ``M``'s stream?

The schema (:mod:`common.schema`) says whether bytes are a message of a known version; this module says
whether that message is *consistent with where it was found* and *usable by the rest of the system*.
The archiver, the labeler, the trader and the archive reader all call it, so an entry one of them
refuses is refused by all (parked once in the dead-letter stream, or skipped and quarantined on load).

A state entry is usable when (each rule names its reason):

* **schema**: it decodes with :func:`common.schema.decode_state` (version ``STATE_VERSION``, types, sizes);
* **market**: its ``m`` is the stream's market;
* **tick**: its entry ID is ``<tick_ms>-0`` with ``0 < tick_ms <= MAX_TICK_MS`` (so ticks are unique per
  stream and fit ``int64``: no two entries of one market can carry the same tick);
* **values**: raw fields are NaN (the schema's "not known") or finite, never infinite, and at least one is
  known (an all-NaN row says nothing); features are finite, and a state of the current feature set
  (``common.features.FEATURE_SET``) carries exactly its ``N_MARKET_FEATURES`` values, in [-1, 1] (the
  feature function's contract, which the trader compares against).

  Finite values outside a field's range (a negative deep bid, an ask above 1) are *not* refused: the
  labeler, the replay environment and the paper engine already refuse to trade at such a price, so the
  state stays useful for its other fields and the archive keeps what the observer saw.

A label entry is usable when it decodes (:func:`common.schema.decode_label`), names the stream's market
and its entry ID is ``<tick_ms>-0`` of its own ``t`` (the ID of the state it labels).

A trade record (``fusion:{T}:trades``) is usable when it is a msgpack map of at most ``MAX_TRADE_BYTES`` with
``v`` = ``TRADE_VERSION``, ``trader`` = the stream's trader and a non-empty string ``type``; any entry ID
(Redis-generated) is accepted.

Checks are vectorised over a batch: :func:`row_problems` on columns, :func:`check_payloads` on raw
payloads (template fast path of :mod:`common.layout`, full decode for the rest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from common.features import FEATURE_SET, N_MARKET_FEATURES
from common.layout import extract
from common.schema import N_RAW, RAW_FIELDS, TRADE_VERSION, SchemaError, State, decode_label, decode_state

MAX_TICK_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_TRADE_BYTES = 16 * 1024  # as a state or label (the archive's per-window byte bound holds)
Problems = list[tuple[int, str]]
I64 = npt.NDArray[np.int64]


def parse_entry_ids(ids: Sequence[str | bytes]) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """``(ms, seq, ok)`` of entry IDs; ``ok`` is False (and ms/seq 0) for an ID that is not ``<ms>-<seq>``
    with both parts in ``int64`` (Redis allows up to 2**64 - 1). Vectorised when the IDs share one length."""
    n = len(ids)
    bs = [e if isinstance(e, bytes) else str(e).encode() for e in ids]
    if n and len({len(b) for b in bs}) == 1 and 3 <= len(bs[0]) <= 37:
        m = np.frombuffer(b"".join(bs), dtype=np.uint8).reshape(n, len(bs[0]))
        dash = np.flatnonzero(m[0] == 0x2D)
        if dash.size == 1 and 0 < int(dash[0]) <= 18 and len(bs[0]) - int(dash[0]) - 1 <= 18:
            k = int(dash[0])
            d = m.astype(np.int64) - 0x30
            ok = (m[:, k] == 0x2D) & ((d[:, :k] >= 0) & (d[:, :k] <= 9)).all(axis=1)
            ok &= ((d[:, k + 1 :] >= 0) & (d[:, k + 1 :] <= 9)).all(axis=1)
            if bool(ok.all()):
                ms = d[:, :k] @ (10 ** np.arange(k - 1, -1, -1, dtype=np.int64))
                seq = d[:, k + 1 :] @ (10 ** np.arange(d.shape[1] - k - 2, -1, -1, dtype=np.int64))
                return ms.astype(np.int64), seq.astype(np.int64), ok
    ms = np.zeros(n, np.int64)
    seq = np.zeros(n, np.int64)
    okl = np.zeros(n, bool)
    lim = (1 << 63) - 1
    for i, b in enumerate(bs):
        a, sep, c = b.partition(b"-")
        if sep and a.isdigit() and c.isdigit() and int(a) <= lim and int(c) <= lim:
            ms[i], seq[i], okl[i] = int(a), int(c), True
    return ms, seq, okl


def row_problems(
    market: str,
    ids_ms: I64,
    ids_seq: I64,
    markets: Sequence[str] | str,
    ticks: I64,
    raw: npt.NDArray[np.float64] | None = None,
    features: npt.NDArray[np.float32] | None = None,
    feature_sets: Sequence[str] | str = FEATURE_SET,
) -> Problems:
    """``[(row, reason)]`` of the rows that break a rule of the module doc (the first failing rule per row).

    ``markets``/``feature_sets`` are per row or one value for all; ``raw``/``features`` None skip their
    rules (labels have neither). Vectorised: a reason string is built only for a failing row."""
    t = np.asarray(ticks, dtype=np.int64)
    n = int(t.shape[0])
    reason: dict[int, str] = {}

    def flag(mask: Any, why: str | Callable[[int], str]) -> None:
        if np.any(mask):
            for i in np.flatnonzero(mask).tolist():
                if i not in reason:
                    reason[i] = why if isinstance(why, str) else why(i)

    if isinstance(markets, str):
        if markets != market:
            flag(np.ones(n, bool), f"state of market {markets[:80]!r} on the stream of {market!r}")
    else:
        mk = list(markets)
        flag(
            np.asarray(mk, dtype=object) != market,
            lambda i: f"state of market {mk[i][:80]!r} on the stream of {market!r}",
        )
    flag((t <= 0) | (t > MAX_TICK_MS), f"tick outside (0, {MAX_TICK_MS}]")
    ims, iseq = np.asarray(ids_ms, np.int64), np.asarray(ids_seq, np.int64)
    flag((ims != t) | (iseq != 0), lambda i: f"entry id {ims[i]}-{iseq[i]} != tick {t[i]}-0")
    if raw is not None and n:
        x = np.asarray(raw, dtype=np.float64).reshape(n, N_RAW)

        def first(cols: npt.NDArray[np.int64], bad: npt.NDArray[np.bool_], what: str) -> Callable[[int], str]:
            return lambda i: f"raw {RAW_FIELDS[int(cols[int(np.argmax(bad[i]))])]} {what}"

        inf = np.isinf(x)
        flag(inf.any(axis=1), first(np.arange(N_RAW), inf, "is infinite"))
        flag(np.isnan(x).all(axis=1), "raw has no known value (all NaN)")
    if features is not None and n:
        f = np.asarray(features, dtype=np.float32).reshape(n, -1)
        flag(~np.isfinite(f).all(axis=1), "features are not finite")
        if isinstance(feature_sets, str):
            cur = np.full(n, feature_sets == FEATURE_SET)
        else:
            cur = np.asarray(list(feature_sets), dtype=object) == FEATURE_SET
        if f.shape[1] != N_MARKET_FEATURES:
            flag(cur, f"{f.shape[1]} features, {FEATURE_SET} has {N_MARKET_FEATURES}")
        else:
            with np.errstate(invalid="ignore"):
                flag(cur & (np.abs(f) > 1.0).any(axis=1), f"features of {FEATURE_SET} outside [-1, 1]")
    return sorted(reason.items())


def check_state(market: str, entry_id: str | bytes, state: State) -> str | None:
    """None when ``state`` (decoded) is usable as entry ``entry_id`` of ``market``'s stream, else the reason."""
    ms, seq, ok = parse_entry_ids([entry_id])
    if not ok[0]:
        return f"bad entry id {entry_id!r}"
    if np.shape(state.raw) != (N_RAW,):
        return f"raw has shape {np.shape(state.raw)}, expected ({N_RAW},)"
    tick = np.array([state.tick_ms if 0 <= state.tick_ms <= MAX_TICK_MS else -1], np.int64)
    feats = state.features.reshape(1, -1)
    bad = row_problems(market, ms, seq, state.market, tick, state.raw.reshape(1, -1), feats, state.feature_set)
    return bad[0][1] if bad else None


def decode_entry(market: str, entry_id: str | bytes, payload: object) -> tuple[State | None, str | None]:
    """``(state, None)`` for a usable state entry of ``market``'s stream, ``(None, reason)`` otherwise."""
    if not isinstance(payload, bytes):
        return None, f"payload is {type(payload).__name__}, not bytes"
    try:
        s = decode_state(payload)
    except SchemaError as e:
        return None, str(e)
    why = check_state(market, entry_id, s)
    return (None, why) if why else (s, None)


def check_payloads(market: str, kind: str, ids: Sequence[str | bytes], payloads: Sequence[object]) -> Problems:
    """``[(i, reason)]`` of the unusable entries ``(ids[i], payloads[i])`` of ``market``'s ``kind`` stream
    (``"states"`` or ``"labels"``), in order. Bulk: payloads sharing a byte layout are checked as columns
    (one template per layout, see :mod:`common.layout`); the rest are decoded one by one."""
    ms, seq, id_ok = parse_entry_ids(ids)
    out: dict[int, str] = {}
    good: list[int] = []
    for i, p in enumerate(payloads):
        if not id_ok[i]:
            out[i] = f"bad entry id {ids[i]!r}"[:200]
        elif type(p) is not bytes or not p:
            out[i] = f"payload is {type(p).__name__ if p else 'empty'}, not msgpack bytes"
        else:
            good.append(i)
    if not good:
        return sorted(out.items())
    if kind == "trades":
        for i in good:
            problem = check_trade(market, payloads[i])  # type: ignore[arg-type]
            if problem:
                out[i] = problem
        return sorted(out.items())
    ps: list[bytes] = [payloads[i] for i in good]  # type: ignore[misc]
    at = np.asarray(good, np.int64)
    groups, left = extract(ps, kind)
    for g in groups:  # one layout: market and feature set are the template's
        k, c, v = g.rows.size, g.columns, g.template.values
        rows = at[g.rows]
        x = np.asarray(c["x"]).view("<f8").reshape(k, N_RAW) if kind == "states" else None
        f = np.asarray(c["f"]).view("<f4").reshape(k, -1) if kind == "states" else None
        t = np.asarray(c["t"]).astype(np.int64)
        for j, reason in row_problems(market, ms[rows], seq[rows], str(v.get("m")), t, x, f, str(v.get("fs"))):
            out[int(rows[j])] = reason
    for j in left:
        i = good[j]
        why: str | None
        try:
            if kind == "states":
                s = decode_state(ps[j])
                why = check_state(market, ids[i], s)
            else:
                lb = decode_label(ps[j])
                tick = lb.tick_ms if 0 <= lb.tick_ms <= MAX_TICK_MS else -1
                bad = row_problems(market, ms[i : i + 1], seq[i : i + 1], lb.market, np.array([tick], np.int64))
                why = bad[0][1] if bad else None
        except SchemaError as e:
            why = str(e)
        if why:
            out[i] = why
    return sorted(out.items())


def check_trade(trader: str, payload: bytes) -> str | None:
    """Why ``payload`` is not a usable record of ``trader``'s trade stream; None when it is (see the module doc)."""
    if len(payload) > MAX_TRADE_BYTES:
        return f"trade record of {len(payload)} bytes > {MAX_TRADE_BYTES}"
    try:
        rec = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as e:
        return f"trade record undecodable: {type(e).__name__}"
    if not isinstance(rec, dict):
        return f"trade record is {type(rec).__name__}, not a map"
    if rec.get("v") != TRADE_VERSION:
        return f"trade record version {str(rec.get('v'))[:20]!r} != {TRADE_VERSION}"
    if rec.get("trader") != trader:
        return f"trade record of trader {str(rec.get('trader'))[:60]!r} on {trader!r}'s stream"
    if not isinstance(rec.get("type"), str) or not rec["type"]:
        return "trade record without a type"
    return None
