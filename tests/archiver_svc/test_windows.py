"""Windows, keys and the deterministic object encoding."""

from __future__ import annotations

import gzip
import random

import msgpack
import pytest

from archiver_svc.synth import synth_payloads
from archiver_svc.windows import (
    ArchiveError,
    decode_object,
    encode_object,
    object_key,
    parse_id,
    parse_ids,
    parse_key,
    window_start,
)
from tests.archiver_svc.helpers import T0

W = 600_000


def test_window_assignment_and_keys() -> None:
    assert window_start(T0 + 599_999, W) == T0 and window_start(T0 + 600_000, W) == T0 + W
    assert object_key("states", "BTC-15M", T0) == f"market-data/BTC-15M/2025-11-23/{T0}.msgpack.gz"
    assert object_key("labels", "BTC-15M", T0 - W) == f"labels/BTC-15M/2025-11-22/{T0 - W}.msgpack.gz"
    assert parse_key(object_key("labels", "X", T0)) == ("labels", "X", T0)
    assert parse_key("quarantine/x") is None and parse_key("models/a/b/c.msgpack.gz") is None


def test_parse_ids_vectorised_and_fallback() -> None:
    ids = [f"{T0 + 500 * i}-0" for i in range(5)] + ["12-345"]
    got = parse_ids(ids)
    assert got.tolist() == [[T0 + 500 * i, 0] for i in range(5)] + [[12, 345]]
    assert parse_ids([f"{T0}-7", f"{T0}-8"]).tolist() == [[T0, 7], [T0, 8]]
    for bad in (["12x-0", "123-0"], ["abc"], ["1-"]):
        with pytest.raises(ValueError):
            parse_ids(bad)
    assert parse_id(b"5-1") == (5, 1)


def test_encoding_deterministic_dedup_sorted() -> None:
    pairs = synth_payloads("BTC-15M", T0, 100)
    a = encode_object("states", "BTC-15M", T0, W, pairs)
    shuffled = pairs[:] + pairs[:30]
    random.Random(0).shuffle(shuffled)
    assert encode_object("states", "BTC-15M", T0, W, shuffled) == a
    assert a[4:8] == b"\0\0\0\0"  # gzip mtime = 0
    obj = decode_object(a, object_key("states", "BTC-15M", T0))
    assert obj.ids == [e for e, _ in pairs] and obj.payloads == [b for _, b in pairs]
    assert (obj.window_start_ms, obj.window_end_ms, obj.kind, obj.market) == (T0, T0 + W, "states", "BTC-15M")
    # the layout: header map then [id, payload] pairs
    u = msgpack.Unpacker(raw=False)
    u.feed(gzip.decompress(a))
    items = list(u)
    assert items[0] == {
        "v": 1,
        "kind": "states",
        "market": "BTC-15M",
        "window_start_ms": T0,
        "window_end_ms": T0 + W,
        "count": 100,
    }
    assert items[1] == [pairs[0][0], pairs[0][1]] and len(items) == 101


def test_seq_order_within_ms() -> None:
    ents = {f"{T0}-10": b"c", f"{T0}-9": b"b", f"{T0}-0": b"a"}
    assert decode_object(encode_object("labels", "M", T0, W, ents)).ids == [f"{T0}-0", f"{T0}-9", f"{T0}-10"]


def test_entries_outside_window_rejected() -> None:
    with pytest.raises(ValueError):
        encode_object("states", "M", T0, W, {f"{T0 + W}-0": b"x"})


def _raw_object(header: dict, pairs: list) -> bytes:
    return gzip.compress(msgpack.packb(header) + b"".join(msgpack.packb(p) for p in pairs), mtime=0)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-4], "truncated"),
        (lambda d: d[:20] + bytes([d[20] ^ 0xFF]) + d[21:], "corrupt"),
        (lambda d: b"not gzip at all", "corrupt"),
        (lambda d: d + b"junk", "trailing"),
    ],
)
def test_corrupt_or_truncated_objects_raise_clearly(mutate, reason) -> None:
    data = encode_object("states", "BTC-15M", T0, W, synth_payloads("BTC-15M", T0, 50))
    with pytest.raises(ArchiveError, match=reason):
        decode_object(mutate(data))


def test_inconsistent_objects_raise() -> None:
    h = {"v": 1, "kind": "states", "market": "M", "window_start_ms": T0, "window_end_ms": T0 + W, "count": 2}
    good = [[f"{T0}-0", b"a"], [f"{T0 + 1}-0", b"b"]]
    decode_object(_raw_object(h, good))
    cases = [
        (h, good[:1], "truncated or corrupt"),  # fewer entries than count
        (h, good + [[f"{T0 + 2}-0", b"c"]], "more entries"),
        (h, good[::-1], "out of order"),
        (h, [good[0], good[0]], "out of order"),
        (h, [[f"{T0}-0", b"a"], [f"{T0 + W}-0", b"b"]], "outside"),
        (h, [[f"{T0}-0", "str"], good[1]], "payload"),
        ({**h, "v": 9}, good, "version"),
        ({**h, "kind": "x"}, good, "kind"),
    ]
    for header, pairs, match in cases:
        with pytest.raises(ArchiveError, match=match):
            decode_object(_raw_object(header, pairs))
    with pytest.raises(ArchiveError, match="does not match key"):
        decode_object(_raw_object(h, good), object_key("states", "OTHER", T0))


def test_decode_fast_matches_decode_object() -> None:
    from archiver_svc.windows import UniformObject, decode_fast

    pairs = synth_payloads("BTC-15M", T0, 300)
    data = encode_object("states", "BTC-15M", T0, W, pairs)
    fast = decode_fast(data, object_key("states", "BTC-15M", T0))
    assert isinstance(fast, UniformObject)
    assert [fast.id_str(i) for i in range(len(fast))] == [e for e, _ in pairs]
    assert [fast.payloads[i].tobytes() for i in range(len(fast))] == [b for _, b in pairs]
    # mixed layouts (another payload length) fall back to the general decoder
    mixed = encode_object("states", "BTC-15M", T0, W, pairs[:5] + [(f"{T0 + 999_999 % W}-0", b"x")])
    assert not isinstance(decode_fast(mixed), UniformObject)
    assert decode_fast(mixed).entries() == decode_object(mixed).entries()


@pytest.mark.parametrize("cut", [30, 1000, -5])
def test_decode_fast_errors_like_decode_object(cut: int) -> None:
    from archiver_svc.windows import decode_fast

    data = encode_object("states", "BTC-15M", T0, W, synth_payloads("BTC-15M", T0, 100))
    with pytest.raises(ArchiveError):
        decode_fast(data[:cut])
    h = {"v": 1, "kind": "states", "market": "M", "window_start_ms": T0, "window_end_ms": T0 + W, "count": 2}
    with pytest.raises(ArchiveError, match="out of order"):
        decode_fast(_raw_object(h, [[f"{T0 + 1}-0", b"a"], [f"{T0}-0", b"b"]]))


def test_objects_written_by_plain_zlib_gzip_read_the_same() -> None:
    import zlib

    from archiver_svc.windows import UniformObject, decode_fast

    pairs = synth_payloads("BTC-15M", T0, 200)
    ours = encode_object("states", "BTC-15M", T0, W, pairs)
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    theirs = z.compress(gzip.decompress(ours)) + z.flush()
    assert theirs != ours and gzip.decompress(theirs) == gzip.decompress(ours)
    key = object_key("states", "BTC-15M", T0)
    assert decode_object(theirs, key) == decode_object(ours, key)
    fast = decode_fast(theirs, key)
    assert isinstance(fast, UniformObject) and [fast.id_str(i) for i in range(len(fast))] == [e for e, _ in pairs]


def test_bulk_pair_packing_is_msgpack() -> None:
    from archiver_svc.windows import _pack_pairs

    for width in (1, 100, 255, 256, 970, 70_000):
        ids = [f"{T0 + i}-{i % 3}" for i in range(40)]
        payloads = [bytes([i % 256]) * width for i in range(40)]
        want = b"".join(msgpack.packb([e, p], use_bin_type=True) for e, p in zip(ids, payloads))
        assert _pack_pairs(ids, payloads) == want
    mixed = [f"{T0}-0", f"{T0 + 1}-10"]
    assert _pack_pairs(mixed, [b"a", b"bc"]) == msgpack.packb([mixed[0], b"a"]) + msgpack.packb([mixed[1], b"bc"])
