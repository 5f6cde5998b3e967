"""Byte-layout templates of msgpack payloads: validate and decode many states/labels in bulk.

A *template* is a payload that passed the full decoder (``common.schema.decode_state`` /
``decode_label``) split into fixed bytes and *variable regions*: the data bytes of the opaque
binary fields (``x``, ``f`` of a state; ``r``, ``b``, ``ok``, ``xs`` of a label) and the value bytes
of sized integers (``t``, ``st``). Any payload of the same length whose fixed bytes are equal to the
template's is, by construction of msgpack, the same map with other values in those regions, so it
decodes without error too: :class:`Validator` checks a payload with a few slice comparisons
instead of a full decode (8 us), and :func:`extract` turns a list of payloads into numpy columns
with one ``b"".join`` + ``frombuffer`` per template. Anything that matches no template takes the
full decoder, so the fast path never accepts what the schema would reject.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack
import numpy as np
import numpy.typing as npt

from common.schema import MAX_MESSAGE_BYTES, SchemaError, decode_label, decode_state

BIN = "bin"
INT = "int"
VAR_FIELDS: dict[str, dict[str, str]] = {
    "states": {"t": INT, "x": BIN, "f": BIN, "st": INT},
    "labels": {"t": INT, "r": BIN, "b": BIN, "ok": BIN, "xs": BIN},
}
FULL_DECODERS: dict[str, Callable[[bytes], object]] = {"states": decode_state, "labels": decode_label}

# msgpack sized-int type byte -> numpy dtype of the following bytes (big-endian)
_INT_DTYPES = {
    0xCC: ">u1",
    0xCD: ">u2",
    0xCE: ">u4",
    0xCF: ">u8",
    0xD0: ">i1",
    0xD1: ">i2",
    0xD2: ">i4",
    0xD3: ">i8",
}


@dataclass(frozen=True, slots=True)
class Field:
    start: int
    end: int
    kind: str  # "bin" | "fixint" | a numpy dtype string for sized ints


@dataclass(frozen=True, slots=True)
class Template:
    proto: bytes
    fixed: tuple[tuple[int, int], ...]  # byte ranges that must equal the prototype's
    fields: dict[str, Field]
    fixints: tuple[int, ...]  # offsets of 1-byte fixint values (must stay a fixint)
    values: dict[str, object]  # decoded values of the fixed fields (e.g. pm, h)

    def matches(self, p: bytes) -> bool:
        if len(p) != len(self.proto):
            return False
        proto = self.proto
        for a, b in self.fixed:
            if p[a:b] != proto[a:b]:
                return False
        for i in self.fixints:
            c = p[i]
            if 0x80 <= c < 0xE0:
                return False
        return True


def build_template(payload: bytes, kind: str) -> Template | None:
    """A template from a payload that the full decoder accepts (None if its layout is unusual)."""
    var = VAR_FIELDS[kind]
    u = msgpack.Unpacker(raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
    u.feed(payload)
    try:
        n = u.read_map_header()
        spans: list[tuple[int, int]] = []
        fields: dict[str, Field] = {}
        fixints: list[int] = []
        values: dict[str, object] = {}
        for _ in range(n):
            k = u.unpack()
            s = u.tell()
            v = u.unpack()
            e = u.tell()
            if k not in var:
                values[str(k)] = v
                continue
            if var[k] == BIN:
                if not isinstance(v, bytes):
                    return None
                fields[k] = Field(e - len(v), e, BIN)
                spans.append((e - len(v), e))
            else:
                if not isinstance(v, int) or isinstance(v, bool):
                    return None
                c = payload[s]
                if c < 0x80 or c >= 0xE0:
                    fields[k] = Field(s, s + 1, "fixint")
                    fixints.append(s)
                    spans.append((s, s + 1))
                elif c in _INT_DTYPES:
                    fields[k] = Field(s + 1, e, _INT_DTYPES[c])
                    spans.append((s + 1, e))
                else:
                    return None
        if u.tell() != len(payload) or set(fields) != set(var):
            return None
    except Exception:  # msgpack raises several exception types on malformed input
        return None
    fixed: list[tuple[int, int]] = []
    pos = 0
    for a, b in sorted(spans):
        if a > pos:
            fixed.append((pos, a))
        pos = b
    if pos < len(payload):
        fixed.append((pos, len(payload)))
    return Template(payload, tuple(fixed), fields, tuple(fixints), values)


class Validator:
    """Checks payloads of one kind: template fast path, full decoder otherwise. Keeps a few templates."""

    def __init__(self, kind: str, max_templates: int = 8) -> None:
        self.kind = kind
        self.decode = FULL_DECODERS[kind]
        self.templates: list[Template] = []
        self.max_templates = max_templates

    def check(self, payload: object) -> str | None:
        """None when valid, else the reason it is not."""
        if not isinstance(payload, bytes):
            return f"payload is {type(payload).__name__}, not bytes"
        for i, t in enumerate(self.templates):
            if t.matches(payload):
                if i:  # move to front: the current layout is checked first
                    self.templates.insert(0, self.templates.pop(i))
                return None
        try:
            self.decode(payload)
        except SchemaError as e:
            return str(e)
        new = build_template(payload, self.kind)
        if new is not None:
            self.templates.insert(0, new)
            del self.templates[self.max_templates :]
        return None

    def check_many(self, payloads: Sequence[object]) -> list[tuple[int, str]]:
        """``[(i, reason)]`` of the invalid payloads, in order; same verdicts as :meth:`check` one by one.

        The rows that have the current template's length are compared against it in one ``uint8``
        matrix (a few slice comparisons for the whole batch); the rest take :meth:`check`.
        """
        n = len(payloads)
        bad: list[tuple[int, str]] = []
        if n < 8 or not all(type(p) is bytes for p in payloads):
            rest = list(range(n))
        else:
            lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)  # type: ignore[arg-type]
            unmatched = np.ones(n, dtype=bool)
            tried: list[Template] = []  # held (not ids: an evicted template's id may be reused)
            for _ in range(4 * self.max_templates):
                for t in list(self.templates):  # each known layout, on the rows still unmatched
                    if any(t is x for x in tried):
                        continue
                    tried.append(t)
                    self._match_into(t, payloads, lengths, unmatched)
                    if not unmatched.any():
                        break
                if not unmatched.any():
                    break
                # a new layout (or a bad payload): the full check of its first row learns its template
                i = int(np.argmax(unmatched))
                unmatched[i] = False
                reason = self.check(payloads[i])
                if reason is not None:
                    bad.append((i, reason))
            rest = np.flatnonzero(unmatched).tolist()
        for i in rest:
            reason = self.check(payloads[i])
            if reason is not None:
                bad.append((i, reason))
        bad.sort()
        return bad

    @staticmethod
    def _match_into(
        t: Template, payloads: Sequence[object], lengths: npt.NDArray[np.int64], unmatched: npt.NDArray[np.bool_]
    ) -> None:
        """Clear ``unmatched`` for the rows that match ``t`` (one matrix comparison)."""
        width = len(t.proto)
        same = unmatched & (lengths == width)
        if not same.any():
            return
        if bool(same.all()):
            idx = np.arange(len(payloads), dtype=np.int64)
            buf = b"".join(payloads)  # type: ignore[arg-type]
        else:
            idx = np.flatnonzero(same)
            buf = b"".join([payloads[i] for i in idx.tolist()])  # type: ignore[misc]
        m = np.frombuffer(buf, dtype=np.uint8).reshape(idx.size, width)
        unmatched[idx[_matches_rows(t, m)]] = False


def _matches_rows(t: Template, m: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Rows of ``m`` (payloads of the template's length) that :meth:`Template.matches`."""
    proto = np.frombuffer(t.proto, dtype=np.uint8)
    ok = np.ones(m.shape[0], dtype=bool)
    for a, b in t.fixed:
        ok &= (m[:, a:b] == proto[a:b]).all(axis=1)
    for i in t.fixints:
        c = m[:, i]
        ok &= (c < 0x80) | (c >= 0xE0)
    return ok


@dataclass(slots=True)
class Extracted:
    """Columns of the rows that matched a template (``rows`` indexes the input)."""

    rows: npt.NDArray[np.int64]
    template: Template
    columns: dict[str, npt.NDArray[np.uint8] | npt.NDArray[np.int64]]  # bin: (n, w) uint8; int: (n,) int64


def _columns(t: Template, m: npt.NDArray[np.uint8]) -> dict[str, npt.NDArray[np.uint8] | npt.NDArray[np.int64]]:
    out: dict[str, npt.NDArray[np.uint8] | npt.NDArray[np.int64]] = {}
    for k, f in t.fields.items():
        block = m[:, f.start : f.end]
        if f.kind == BIN:
            out[k] = np.ascontiguousarray(block)
        elif f.kind == "fixint":
            out[k] = _fixint(block[:, 0])
        else:
            out[k] = np.ascontiguousarray(block).view(f.kind).reshape(-1).astype(np.int64)
    return out


def _fixint(b: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    v = b.astype(np.int64)
    return np.where(v >= 0xE0, v - 256, v)


def match_matrix(m: npt.NDArray[np.uint8], kind: str, max_templates: int = 16) -> tuple[list[Extracted], list[int]]:
    """Template-match the rows of ``m`` (n payloads of one length); rows index ``m``."""
    decode = FULL_DECODERS[kind]
    groups: list[Extracted] = []
    leftovers: list[int] = []
    rem = np.arange(m.shape[0], dtype=np.int64)
    while rem.size:
        if len(groups) >= max_templates:
            leftovers.extend(rem.tolist())
            break
        first = m[rem[0]].tobytes()
        try:
            decode(first)
            t = build_template(first, kind)
        except SchemaError:
            t = None
        if t is None:
            leftovers.append(int(rem[0]))
            rem = rem[1:]
            continue
        sub = m if rem.size == m.shape[0] else m[rem]  # first round: no copy of the whole matrix
        ok = _matches_rows(t, sub)
        if ok.all():  # the usual case: every row has the layout (no fancy-index copies)
            groups.append(Extracted(rem, t, _columns(t, sub)))
            break
        groups.append(Extracted(rem[ok], t, _columns(t, sub[ok])))
        rem = rem[~ok]
    return groups, sorted(leftovers)


def extract(payloads: Sequence[bytes], kind: str, max_templates: int = 16) -> tuple[list[Extracted], list[int]]:
    """Group ``payloads`` by template and cut their variable regions out in bulk.

    Returns (groups, leftovers): ``leftovers`` are indexes that matched no template (invalid, or
    too many layouts); the caller decodes those one by one.
    """
    n = len(payloads)
    lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    groups: list[Extracted] = []
    leftovers: list[int] = []
    for length in np.unique(lengths).tolist():
        if lengths[0] == lengths[-1] == length and bool((lengths == length).all()):
            idx = np.arange(n, dtype=np.int64)
            buf = b"".join(payloads)
        else:
            idx = np.nonzero(lengths == length)[0]
            buf = b"".join([payloads[i] for i in idx.tolist()])
        if length == 0:
            leftovers.extend(idx.tolist())
            continue
        m = np.frombuffer(buf, dtype=np.uint8).reshape(idx.size, length)
        gs, left = match_matrix(m, kind, max(1, max_templates - len(groups)))
        for g in gs:
            g.rows = idx[g.rows]
        groups.extend(gs)
        leftovers.extend(idx[left].tolist())
    return groups, sorted(leftovers)
