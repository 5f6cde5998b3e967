"""Archive windows and objects (pure).

Windows are fixed in stream-ID time: an entry ``<ms>-<seq>`` belongs to the window starting at
``ms // W * W``. The object of a window is at

    market-data/{market}/{YYYY-MM-DD}/{window_start_ms}.msgpack.gz   (states)
    labels/{market}/{YYYY-MM-DD}/{window_start_ms}.msgpack.gz        (labels)
    trades/{trader}/{YYYY-MM-DD}/{window_start_ms}.msgpack.gz        (a trader's records; "market" = trader)

(date = UTC date of the window start). Its bytes are ``gzip(mtime=0, level GZIP_LEVEL)`` (ISA-L's
deflate via ``isal.isal_zlib``, one shot over the whole body) of a msgpack sequence: a header map
``{v, kind, market, window_start_ms, window_end_ms, count}`` followed by ``count`` pairs
``[entry_id_str, payload_bytes]`` sorted by entry ID, without duplicates.

Guarantees: :func:`encode_object` is deterministic (the same set of entries always gives the same
bytes, whatever their order or repetition), so a crash-and-rerun rewrites a key with identical
bytes; objects compressed by any gzip (e.g. plain zlib) are read the same; :func:`decode_object`
validates everything and raises :class:`ArchiveError` with a clear
reason for a truncated, corrupt or inconsistent object; decompression is streaming and stops at
:func:`max_inflated_bytes` of the window (and at what the header's entry count allows), so a gzip
bomb costs at most that much memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgpack
import numpy as np
import numpy.typing as npt
from isal import isal_zlib

from common.names import check_name, is_valid_name
from common.schema import MAX_MESSAGE_BYTES

OBJECT_VERSION = 1
GZIP_LEVEL = 1  # fixed: part of the byte-exact format (ISA-L level 1: ~5x faster than zlib's 1, same size)
KINDS = ("states", "labels", "trades")
PREFIXES = {"states": "market-data", "labels": "labels", "trades": "trades"}
SUFFIX = ".msgpack.gz"
QUARANTINE_PREFIX = "quarantine/"
MAX_OBJECT_BYTES = 1 << 30  # absolute cap of an inflated object, whatever the window
MIN_TICK_MS = 50  # the smallest tick the settings allow (Settings.tick_ms ge=50)
ENTRY_OVERHEAD = 64  # msgpack framing of one [id, payload] pair and its ID (<= 41 characters)
CHUNK = 64
HEADER_MAX = 4096


class ArchiveError(ValueError):
    """An archive object that cannot be used (truncated, corrupt, inconsistent)."""


def parse_id(eid: str | bytes) -> tuple[int, int]:
    """``"<ms>-<seq>"`` -> ``(ms, seq)``; raises ValueError on anything else."""
    s = eid.decode() if isinstance(eid, bytes) else eid
    ms, sep, seq = s.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"bad entry id {s!r}")
    return int(ms), int(seq)


def _parse_id_matrix(m: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64] | None:
    """(n, width) ASCII rows ``<ms>-<seq>`` (one dash column) -> (n, 2) int64; None if not that shape."""
    n, width = m.shape
    dash_cols = np.nonzero(m[0] == 0x2D)[0]
    if dash_cols.size != 1:
        return None
    dash = int(dash_cols[0])
    if not (0 < dash < 19 and 0 < width - dash - 1 < 19) or not bool((m[:, dash] == 0x2D).all()):
        return None
    d = m.astype(np.int64) - 0x30
    d[:, dash] = 0
    if not bool(((d >= 0) & (d <= 9)).all()):
        return None
    out = np.empty((n, 2), dtype=np.int64)
    out[:, 0] = d[:, :dash] @ (10 ** np.arange(dash - 1, -1, -1, dtype=np.int64))
    out[:, 1] = d[:, dash + 1 :] @ (10 ** np.arange(width - dash - 2, -1, -1, dtype=np.int64))
    return out


def parse_ids(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """Many ``"<ms>-<seq>"`` IDs -> (n, 2) int64 ``[ms, seq]``, vectorised when they share one length."""
    n = len(ids)
    if n == 0:
        return np.empty((0, 2), dtype=np.int64)
    width = len(ids[0])
    if set(map(len, ids)) == {width} and width <= 38:
        try:
            m = np.frombuffer("".join(ids).encode("ascii"), dtype=np.uint8).reshape(n, width)
        except UnicodeEncodeError:
            raise ValueError("non-ascii entry id") from None
        got = _parse_id_matrix(m)
        if got is not None:
            return got
    out = np.empty((n, 2), dtype=np.int64)
    for i, e in enumerate(ids):
        out[i] = parse_id(e)
    return out


def window_start(ms: int, window_ms: int) -> int:
    return ms - ms % window_ms


def utc_date(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def object_key(kind: str, market: str, window_start_ms: int) -> str:
    """Key of a window's object; ``market`` must follow the name grammar (:class:`InvalidName` otherwise)."""
    if kind not in PREFIXES:
        raise ValueError(f"unknown kind {kind!r}")
    return f"{PREFIXES[kind]}/{check_name(market)}/{utc_date(window_start_ms)}/{window_start_ms}{SUFFIX}"


def market_prefix(kind: str, market: str) -> str:
    """Folder of a market's objects; ``market`` must follow the name grammar (:class:`InvalidName` otherwise)."""
    return f"{PREFIXES[kind]}/{check_name(market)}/"


def parse_key(key: str) -> tuple[str, str, int] | None:
    """``(kind, market, window_start_ms)`` of an archive key; None for other keys (and for a market name
    outside the grammar)."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].endswith(SUFFIX):
        return None
    kind = next((k for k, p in PREFIXES.items() if p == parts[0]), None)
    stem = parts[3][: -len(SUFFIX)]
    if kind is None or not stem.isdigit() or not is_valid_name(parts[1]):
        return None
    return kind, parts[1], int(stem)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    kind: str
    market: str
    window_start_ms: int
    window_end_ms: int
    ids: list[str]
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.ids)

    def entries(self) -> dict[str, bytes]:
        return dict(zip(self.ids, self.payloads, strict=True))


def encode_object(
    kind: str,
    market: str,
    window_start_ms: int,
    window_ms: int,
    entries: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
) -> bytes:
    """Deterministic bytes of a window's object (entries de-duplicated by ID, sorted by ID)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    d = entries if type(entries) is dict else dict(entries.items() if isinstance(entries, Mapping) else entries)
    end = window_start_ms + window_ms
    ids = list(d)
    parsed = parse_ids(ids)
    if ids and not (window_start_ms <= int(parsed[:, 0].min()) and int(parsed[:, 0].max()) < end):
        raise ValueError(f"entries outside window [{window_start_ms}, {end})")
    order = np.lexsort((parsed[:, 1], parsed[:, 0])).tolist()
    header = {
        "v": OBJECT_VERSION,
        "kind": kind,
        "market": market,
        "window_start_ms": window_start_ms,
        "window_end_ms": end,
        "count": len(ids),
    }
    head = msgpack.packb(header, use_bin_type=True)
    if order != list(range(len(ids))):
        ids = [ids[i] for i in order]
    body = _pack_pairs(ids, [d[i] for i in ids])
    # one shot over the whole sequence: deterministic for the same bytes (mtime 0 in the gzip header);
    # ISA-L releases the GIL, so writer threads compress in parallel
    return isal_zlib.compress(head + body, GZIP_LEVEL, 31)


def _pack_pairs(ids: list[str], payloads: list[bytes]) -> bytes:
    """msgpack of the ``[id, payload]`` pairs, concatenated (no outer array header).

    Bulk path when every ID and every payload has the same length (the usual window): one uint8
    matrix filled column-block-wise instead of one ``packb`` per pair; the bytes are the same.
    """
    n = len(ids)
    if n == 0:
        return b""
    idw, pw = len(ids[0]), len(payloads[0])
    if 0 < idw < 32 and 0 < pw < 1 << 16:
        joined_ids = "".join(ids).encode()
        joined = b"".join(payloads)
        if len(joined_ids) == n * idw and len(joined) == n * pw:
            prefix = bytes([0x92, 0xA0 | idw])
            mid = (b"\xc4" + pw.to_bytes(1, "big")) if pw < 256 else (b"\xc5" + pw.to_bytes(2, "big"))
            width = 2 + idw + len(mid) + pw
            m = np.empty((n, width), dtype=np.uint8)
            m[:, :2] = np.frombuffer(prefix, dtype=np.uint8)
            m[:, 2 : 2 + idw] = np.frombuffer(joined_ids, dtype=np.uint8).reshape(n, idw)
            m[:, 2 + idw : 2 + idw + len(mid)] = np.frombuffer(mid, dtype=np.uint8)
            m[:, 2 + idw + len(mid) :] = np.frombuffer(joined, dtype=np.uint8).reshape(n, pw)
            return m.tobytes()
    # general path: chunks of CHUNK pairs (their outer array header stripped)
    out = []
    for i in range(0, n, CHUNK):
        part = [[e, p] for e, p in zip(ids[i : i + CHUNK], payloads[i : i + CHUNK], strict=True)]
        out.append(msgpack.packb(part, use_bin_type=True)[len(_array_header(len(part))) :])
    return b"".join(out)


def max_inflated_bytes(window_ms: int) -> int:
    """The most bytes a valid object of a ``window_ms`` window can inflate to: one entry per ``MIN_TICK_MS``
    (the smallest tick the settings allow), each at most ``MAX_MESSAGE_BYTES`` plus its ID and framing,
    plus the header. Decompression stops there (a gzip bomb costs this much, not ``MAX_OBJECT_BYTES``)."""
    return min(
        MAX_OBJECT_BYTES, (max(window_ms, 1) // MIN_TICK_MS + 1) * (MAX_MESSAGE_BYTES + ENTRY_OVERHEAD) + HEADER_MAX
    )


def decompress(data: bytes, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
    """gunzip with a clear error for truncated/corrupt data; streaming, it stops (ArchiveError "object too
    large") as soon as the output would exceed ``max_bytes`` or what the header's entry count allows."""
    try:
        # the header (first HEADER_MAX bytes) bounds the output by its entry count; then one pass from the start
        # into one buffer (re-inflating the few header bytes is cheaper than joining two buffers)
        head = isal_zlib.decompressobj(wbits=31).decompress(data, min(HEADER_MAX, max_bytes))
        limit = min(max_bytes, _count_limit(head))
        d = isal_zlib.decompressobj(wbits=31)
        out = d.decompress(data, limit)
        if not d.eof:
            if len(out) >= limit:
                raise ArchiveError(f"object too large: inflates beyond {limit} bytes")
            raise ArchiveError("truncated gzip stream")
        if d.unused_data:
            raise ArchiveError("trailing bytes after the gzip stream")
        return out
    except isal_zlib.error as e:  # type: ignore[misc]  # isal's stub declares `error: Exception` (an instance)
        raise ArchiveError(f"corrupt gzip: {e}") from e


def _count_limit(head: bytes) -> int:
    """Bytes an object whose decompressed start is ``head`` may have, by its header's entry count."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=HEADER_MAX)
    u.feed(head)
    try:
        h = u.unpack()
    except Exception:  # unreadable: the decoder reports it; no bound from here
        return MAX_OBJECT_BYTES
    count = h.get("count") if isinstance(h, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return MAX_OBJECT_BYTES
    return int(u.tell()) + count * (MAX_MESSAGE_BYTES + ENTRY_OVERHEAD)


def _header(raw: bytes, expect_key: str | None) -> tuple[str, str, int, int, int, int]:
    """(kind, market, window_start_ms, window_end_ms, count, body offset) of a decompressed object."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=HEADER_MAX)
    u.feed(raw[:HEADER_MAX])  # the header is small: never copy the whole object into the unpacker
    try:
        h = u.unpack()
    except Exception as e:
        raise ArchiveError(f"unreadable header: {e.__class__.__name__}") from e
    if not isinstance(h, dict) or h.get("v") != OBJECT_VERSION:
        raise ArchiveError(f"not an archive header of version {OBJECT_VERSION}")
    try:
        kind, market = h["kind"], h["market"]
        ws, we, count = h["window_start_ms"], h["window_end_ms"], h["count"]
    except KeyError as e:
        raise ArchiveError(f"header lacks {e.args[0]!r}") from None
    if kind not in KINDS or not isinstance(market, str):
        raise ArchiveError("header kind/market invalid")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (ws, we, count)) or we <= ws or count < 0:
        raise ArchiveError("header window/count invalid")
    if expect_key is not None and parse_key(expect_key) != (kind, market, ws):
        raise ArchiveError(f"header ({kind}, {market}, {ws}) does not match key {expect_key}")
    return kind, market, ws, we, count, u.tell()


def _check_order(parsed: npt.NDArray[np.int64], ws: int, we: int) -> None:
    if parsed.shape[0]:
        ms, seq = parsed[:, 0], parsed[:, 1]
        increasing = (ms[1:] > ms[:-1]) | ((ms[1:] == ms[:-1]) & (seq[1:] > seq[:-1]))
        if not bool(increasing.all()) or int(ms[0]) < ws or int(ms[-1]) >= we:
            raise ArchiveError("entries out of order, duplicated or outside the window")


def decode_object(data: bytes, expect_key: str | None = None, max_bytes: int = MAX_OBJECT_BYTES) -> ArchiveObject:
    """Parse and validate an object's bytes (optionally against the key it was stored under); it may inflate
    to ``max_bytes`` at most (see :func:`max_inflated_bytes`)."""
    return _decode_raw(decompress(data, max_bytes), expect_key)


def _decode_raw(raw: bytes, expect_key: str | None) -> ArchiveObject:
    kind, market, ws, we, count, off = _header(raw, expect_key)
    try:
        pairs = msgpack.unpackb(_array_header(count) + raw[off:], raw=False, strict_map_key=True, use_list=False)
    except msgpack.ExtraData:
        raise ArchiveError("more entries than the header's count") from None
    except Exception as e:
        raise ArchiveError(f"truncated or corrupt entries ({e.__class__.__name__})") from None
    if not isinstance(pairs, tuple) or set(map(type, pairs)) - {tuple} or set(map(len, pairs)) - {2}:
        raise ArchiveError("entry is not [id, payload]")
    ids = [p[0] for p in pairs]
    payloads = [p[1] for p in pairs]
    if set(map(type, ids)) - {str} or set(map(type, payloads)) - {bytes}:
        raise ArchiveError("entry is not [id: str, payload: bytes]")
    try:
        parsed = parse_ids(ids)
    except ValueError as e:
        raise ArchiveError(str(e)) from None
    _check_order(parsed, ws, we)
    return ArchiveObject(kind, market, ws, we, ids, payloads)


@dataclass(frozen=True, slots=True)
class UniformObject:
    """An object whose pairs all share one byte layout, as arrays (no per-entry Python objects)."""

    kind: str
    market: str
    window_start_ms: int
    window_end_ms: int
    ids: npt.NDArray[np.int64]  # (n, 2) [ms, seq]
    payloads: npt.NDArray[np.uint8]  # (n, payload_len), a view into the decompressed bytes

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def id_str(self, i: int) -> str:
        return f"{self.ids[i, 0]}-{self.ids[i, 1]}"


def _str_header(b: int, nxt: int) -> tuple[int, int] | None:
    if 0xA0 <= b <= 0xBF:
        return 1, b & 0x1F
    if b == 0xD9:
        return 2, nxt
    return None


def decode_fast(
    data: bytes, expect_key: str | None = None, max_bytes: int = MAX_OBJECT_BYTES
) -> ArchiveObject | UniformObject:
    """Like :func:`decode_object` (same validation, same errors), returning arrays when every pair has
    the same layout (the usual case: one ID width, one payload length)."""
    raw = decompress(data, max_bytes)
    kind, market, ws, we, count, off = _header(raw, expect_key)
    body = len(raw) - off
    if count == 0 or body < 8 or raw[off] != 0x92:
        return _decode_raw(raw, expect_key)
    sh = _str_header(raw[off + 1], raw[off + 2])
    if sh is None:
        return _decode_raw(raw, expect_key)
    id_start = off + 1 + sh[0]
    bin_at = id_start + sh[1]
    if bin_at + 5 > len(raw):
        return _decode_raw(raw, expect_key)
    tb = raw[bin_at]
    if tb == 0xC4:
        bh, plen = 2, raw[bin_at + 1]
    elif tb == 0xC5:
        bh, plen = 3, int.from_bytes(raw[bin_at + 1 : bin_at + 3], "big")
    elif tb == 0xC6:
        bh, plen = 5, int.from_bytes(raw[bin_at + 1 : bin_at + 5], "big")
    else:
        return _decode_raw(raw, expect_key)
    size = bin_at + bh + plen - off
    if body != count * size:
        return _decode_raw(raw, expect_key)
    m = np.frombuffer(raw, dtype=np.uint8, offset=off).reshape(count, size)
    a, b = 0, id_start - off  # pair + str headers
    c, d = bin_at - off, bin_at - off + bh  # bin header
    if not (bool((m[:, a:b] == m[0, a:b]).all()) and bool((m[:, c:d] == m[0, c:d]).all())):
        return _decode_raw(raw, expect_key)
    parsed = _parse_id_matrix(m[:, b:c])
    if parsed is None:
        return _decode_raw(raw, expect_key)
    _check_order(parsed, ws, we)
    return UniformObject(kind, market, ws, we, parsed, m[:, d:])
