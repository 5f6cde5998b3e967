"""Bulk label encoding: many :class:`~common.schema.Label` messages at once, byte-identical to
:func:`common.schema.encode_label`.

A label message has a fixed layout for one market and one horizon set (every field but the
tick and the binary arrays is constant), so the rows are assembled as one ``uint8`` matrix.
Rows whose tick does not pack as a msgpack uint64 (below 2**32) and any layout drift are
handled by :func:`encode_label` itself: the first row is always checked against it.
"""

from __future__ import annotations

import msgpack
import numpy as np

from common.schema import ACTIONS, LABEL_VERSION, LabelColumns, encode_label

_U32 = 1 << 32


def _bin_header(n: int) -> bytes:
    return msgpack.packb(b"\x00" * n, use_bin_type=True)[:-n] if n else b"\xc4\x00"


def _layout(market: str, horizons: tuple[int, ...]) -> list[tuple[str, bytes | int]]:
    nh = len(horizons)
    p = msgpack.packb
    return [
        ("c", b"\x88" + p("v") + p(LABEL_VERSION) + p("m") + p(market) + p("t") + b"\xcf"),
        ("tick", 8),
        ("c", p("h") + p([int(h) for h in horizons]) + p("r") + _bin_header(4 * len(ACTIONS) * nh)),
        ("rewards", 4 * len(ACTIONS) * nh),
        ("c", p("b") + _bin_header(nh)),
        ("best", nh),
        ("c", p("ok") + _bin_header(nh)),
        ("valid", nh),
        ("c", p("xs") + _bin_header(nh)),
        ("exit_kind", nh),
    ]


def encode_label_rows(market: str, lc: LabelColumns) -> list[bytes]:
    """``[encode_label(lc.row(i, market)) for i in range(len(lc))]``, about 20x faster."""
    n = len(lc)
    if n == 0:
        return []
    layout = _layout(market, lc.horizons_s)
    width = sum(len(v) if isinstance(v, bytes) else v for _, v in layout)
    m = np.empty((n, width), dtype=np.uint8)
    cols = {
        "tick": lc.tick_ms.astype(">u8").view(np.uint8).reshape(n, 8),
        "rewards": np.ascontiguousarray(lc.rewards, dtype="<f4").view(np.uint8).reshape(n, -1),
        "best": np.ascontiguousarray(lc.best, dtype="i1").view(np.uint8).reshape(n, -1),
        "valid": np.ascontiguousarray(lc.valid, dtype="u1").reshape(n, -1),
        "exit_kind": np.ascontiguousarray(lc.exit_kind, dtype="u1").reshape(n, -1),
    }
    at = 0
    for name, v in layout:
        if isinstance(v, bytes):
            m[:, at : at + len(v)] = np.frombuffer(v, dtype=np.uint8)
            at += len(v)
        else:
            m[:, at : at + v] = cols[name]
            at += v
    buf = m.tobytes()
    out = [buf[i : i + width] for i in range(0, n * width, width)]
    small = np.flatnonzero((lc.tick_ms < _U32) | (lc.tick_ms < 0))
    for i in small:
        out[i] = encode_label(lc.row(int(i), market))
    if out[0] != encode_label(lc.row(0, market)):  # layout drift (schema changed): the slow, sure path
        return [encode_label(lc.row(i, market)) for i in range(n)]
    return out
