"""Physical form of each column of a compacted day (layout version 2): exact narrow types, chosen by measurement.

A raw field whose values lie on a decimal grid is stored as a Parquet DECIMAL of a fixed scale per field (the
unscaled integers, INT32 or INT64; NaN -> null) and otherwise as float64, per file. Every data tool reads a
DECIMAL as the decimal value (DuckDB ``0.510``; ``CAST(x AS DOUBLE)`` and ``fetchnumpy()`` give the float64
bit for bit); :func:`to_numpy` gives the float64 a state held, bit for bit, NaN for null.

Exactness: a column is stored as DECIMAL(p, s) only when, for every row, ``k = rint(x * 10**s)`` fits ``p``
digits and ``k / 10**s`` (one correctly rounded division) is ``x`` bit for bit (sign of zero included); one
value off the grid keeps the whole column float64 in that file (its Parquet type says which).

Scales and encodings per kind of field (bytes/state measured on a day of ``archiver_svc.synth``, zstd-3,
float64 before -> after; ``benchmarks/scale.py``). Encodings were chosen again on the real BTCUSDT +
Polymarket states of ``benchmarks/scale_real.py`` and the plausible generator, keeping the one at least as small
on both: PLAIN for the Binance quotes and closes that step now and then, DELTA for counts and ages that drift
(``up_mid_n_5m``: 1.96 -> 0.13 on the real states, ``bn_trades_10s``: 1.81 -> 1.25); only PLAIN, DELTA and
dictionary for integers, which every reader decodes. (Polymarket prices stay DELTA: 0.29 vs 0.45 plain on the
synthetic day, 0.46 vs 0.29 on the 1,301 real states of level 0 only.)

* Polymarket prices (``*_px_*``, ``*_last_trade_px``; tick 0.001/0.01): DECIMAL(9, 3), delta-encoded
  (0.52 -> 0.31 each);
* Polymarket sizes (``*_sz_*`` of the up/down books; shares with 2 decimals): DECIMAL(9, 2), plain
  (2.10 -> 1.17 each);
* settlement flags (0/1): DECIMAL(9, 0); window times in seconds: DECIMAL(18, 3) (ms);
* Binance prices (``bn_bid``, ``bn_ask``, ``bn_last_px``, ``bn_close_*``, ``bn_open_px``; tick 0.01 on the
  USDT pairs): DECIMAL(18, 2), delta-encoded for the last price (2.36 -> 1.3), plain for the others
  (bid/ask 1.1 -> 0.9); pairs with a finer tick stay float64;
* Binance flow (``bn_*_notional``, ``bn_net_*``): DECIMAL(18, 2) delta (4.5 -> 3.6) when on the cent grid;
* counts and ages in ms: DECIMAL(18, 0), delta-encoded (the Polymarket book's age: dictionary);
  ``bn_large_age_s``: DECIMAL(18, 3), delta;
* Binance best bid/ask sizes (base-asset quantities on the symbol's lot: 0.00001 for BTCUSDT, at most 8
  decimals): DECIMAL(18, 5), else DECIMAL(18, 8), delta-encoded (real BTCUSDT: 6.7 -> 2.65; 3.9 at scale 8);
* other raw floats (decayed flows, volatilities, volumes, the Polymarket mid's deviation): float64, plain;
* features (float32, the observer's values): BYTE_STREAM_SPLIT for the continuous ones (3.71 -> 3.27 for
  returns), dictionary for the quantised ones (``trade_intensity``, ``large_trade_flag``: 2.41 -> 1.18),
  plain for those that repeat (book imbalance at L1, 10-minute returns);
* ``tick_ms``: int64, delta-encoded (1.95 -> 0.02).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from common.schema import RAW_FIELDS

# field -> (scale, precision, encoding) of its DECIMAL form; fields not listed are float64
DELTA = "DELTA_BINARY_PACKED"
PLAIN = "PLAIN"
DICT = "DICT"
BSS = "BYTE_STREAM_SPLIT"


def _decimal_kind(name: str) -> tuple[int, int, str] | None:
    if name.startswith(("up_", "dn_")) and "_px" in name:
        return 3, 9, DELTA
    if name.startswith(("up_", "dn_")) and "_sz_" in name:
        return 2, 9, PLAIN
    if name in ("pm_settle_up", "pm_prev_settle_up"):
        return 0, 9, DICT
    if name in ("pm_start_s", "pm_end_s", "pm_prev_end_s"):
        return 3, 18, DELTA
    if name in ("bn_last_px", "bn_close_0"):  # moves on most ticks, by a few cents
        return 2, 18, DELTA
    if name in ("bn_bid", "bn_ask", "bn_open_px") or name.startswith("bn_close_"):  # steps now and then
        return 2, 18, PLAIN
    if name.endswith("_notional") or name.startswith("bn_net_"):
        return 2, 18, DELTA
    if name == "age_poly_ms":
        return 0, 18, DICT
    if name in ("bn_trades_10s", "up_mid_n_5m", "age_binance_ms"):  # counts and ages that drift
        return 0, 18, DELTA
    if name == "bn_large_age_s":
        return 3, 18, DELTA
    if name in ("bn_bid_sz", "bn_ask_sz"):  # base-asset quantities: BTCUSDT's lot is 0.00001
        return 5, 18, DELTA
    return None


# a field whose values are off its grid in a file is tried at these finer scales before float64
FINER_SCALES: dict[str, tuple[int, ...]] = {"bn_bid_sz": (8,), "bn_ask_sz": (8,)}  # Binance's finest lot: 1e-8


DECIMAL_KINDS: dict[str, tuple[int, int, str]] = {n: k for n in RAW_FIELDS if (k := _decimal_kind(n)) is not None}
FEATURE_ENCODING: dict[str, str] = {
    "f_trade_intensity": DICT,
    "f_large_trade_flag": DICT,
    "f_ob_imbalance_l1": PLAIN,
    "f_returns_10m": PLAIN,
    "f_spread_pct": PLAIN,
    "f_up_mid": PLAIN,
}


NEG_ZERO = np.float64(-0.0).view(np.int64)


def decimal_column(x: npt.NDArray[np.float64], scale: int, precision: int) -> pa.Array | None:
    """``x`` as a DECIMAL(precision, scale) array (NaN -> null) when that is exact for every row, else None."""
    p10 = 10.0**scale
    k = x * p10
    np.rint(k, out=k)
    with np.errstate(invalid="ignore"):
        exact = np.divide(k, p10) == x  # NaN: False
    nan: npt.NDArray[np.bool_] | None = None
    if not bool(exact.all()):
        nan = np.isnan(x)
        if not bool((exact | nan).all()):
            return None
        if bool(nan.all()):
            k[:] = 0.0
        else:
            k[nan] = 0.0
    if x.size and (float(np.abs(k).max()) >= 10.0**precision or bool((x.view(np.int64) == NEG_ZERO).any())):
        return None  # beyond the precision, or a -0.0 (an integer has no sign of zero)
    ints = k.astype(np.int32 if precision <= 9 else np.int64)
    n_null = 0 if nan is None else int(nan.sum())
    valid = pa.py_buffer(np.packbits(~nan, bitorder="little")) if nan is not None and n_null else None
    typ = pa.decimal32(precision, scale) if precision <= 9 else pa.decimal64(precision, scale)
    return pa.Array.from_buffers(typ, x.size, [valid, pa.py_buffer(ints)], null_count=n_null)


def raw_column(name: str, x: npt.NDArray[np.float64]) -> tuple[pa.Array, str]:
    """The stored array of raw field ``name`` and its Parquet encoding."""
    kind = DECIMAL_KINDS.get(name)
    if kind is not None:
        for scale in (kind[0], *FINER_SCALES.get(name, ())):
            arr = decimal_column(x, scale, kind[1])
            if arr is not None:
                return arr, kind[2]
    return pa.array(np.ascontiguousarray(x, np.float64)), PLAIN


def feature_encoding(name: str) -> str:
    return FEATURE_ENCODING.get(name, BSS)


def writer_options(encodings: dict[str, str]) -> dict[str, Any]:
    """``pq.write_table`` keyword arguments for per-column encodings (``DICT`` = dictionary)."""
    return {
        "use_dictionary": [n for n, e in encodings.items() if e == DICT],
        "column_encoding": {n: e for n, e in encodings.items() if e not in (DICT, PLAIN)},
        "store_decimal_as_integer": True,
    }


def _valid_mask(chunk: pa.Array) -> npt.NDArray[np.bool_] | None:
    if chunk.null_count == 0:
        return None
    bits = np.frombuffer(chunk.buffers()[0], np.uint8)
    return np.unpackbits(bits, bitorder="little", count=chunk.offset + len(chunk))[chunk.offset :].astype(bool)


def _unscaled(chunk: pa.Array) -> npt.NDArray[np.int64] | npt.NDArray[np.int32]:
    t = chunk.type
    n, off = len(chunk), chunk.offset
    buf = chunk.buffers()[1]
    if isinstance(t, pa.Decimal32Type):
        return np.frombuffer(buf, np.int32, count=off + n)[off:]
    if isinstance(t, pa.Decimal64Type):
        return np.frombuffer(buf, np.int64, count=off + n)[off:]
    # decimal128 (little-endian; our values fit the low 64 bits)
    return np.frombuffer(buf, np.int64, count=2 * (off + n))[2 * off :: 2]


def to_numpy(col: pa.ChunkedArray | pa.Array, dtype: Any = np.float64) -> npt.NDArray[Any]:
    """A stored raw column as the float64 values the states held (NaN for null), in ``dtype`` (float32: the
    float32 of that float64). Float columns come back zero-copy when possible."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    if not chunks:
        return np.zeros(0, dtype)
    if not pa.types.is_decimal(chunks[0].type):
        out: npt.NDArray[Any] = (pa.chunked_array(chunks) if len(chunks) > 1 else chunks[0]).to_numpy(
            zero_copy_only=False
        )
        return out if out.dtype == dtype else out.astype(dtype)
    parts = []
    for c in chunks:
        v = _unscaled(c) / (10.0**c.type.scale)
        mask = _valid_mask(c)
        if mask is not None:
            v[~mask] = np.nan
        parts.append(v if dtype == np.float64 else v.astype(dtype))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
