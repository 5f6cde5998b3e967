"""The dead-letter stream parks an entry once, with service and reason, bounded in bytes (real Redis)."""

from __future__ import annotations

import hashlib

from common import keys
from common.deadletter import DeadLetters


def _entries(r):
    return [{k.decode(): v for k, v in f.items()} for _, f in r.xrange(keys.DEAD_LETTER_STREAM)]


def test_parked_once_across_services(r):
    a, b = DeadLetters(r, "archiver"), DeadLetters(r, "labeler")
    assert a.park("fusion:{M}:states", b"5-0", "bad schema", b"xyz") == 1
    assert b.park("fusion:{M}:states", "5-0", "bad schema", b"xyz") == 0
    pipe = r.pipeline(transaction=True)
    b.park("fusion:{M}:states", "6-0", "market mismatch", b"abc", pipe=pipe)
    pipe.xlen(keys.DEAD_LETTER_STREAM)
    assert pipe.execute() == [1, 2]
    got = _entries(r)
    assert [(e["id"], e["service"], e["reason"]) for e in got] == [
        (b"5-0", b"archiver", b"bad schema"),
        (b"6-0", b"labeler", b"market mismatch"),
    ]
    assert got[0]["sha256"].decode() == hashlib.sha256(b"xyz").hexdigest()


def test_big_payload_truncated_and_stream_capped_in_bytes(r):
    dl = DeadLetters(r, "trader", max_entry_bytes=1000, max_bytes=2500)
    big = b"x" * 10_000_000
    dl.park("s", "1-0", "huge", big)
    e = _entries(r)[0]
    assert e["payload"] == b"x" * 1000 and e["truncated"] == b"1" and e["size"] == b"10000000"
    for i in range(2, 8):
        dl.park("s", f"{i}-0", "huge", big)
    held = int(r.get(keys.DEAD_LETTER_BYTES))
    assert held <= 2500
    assert held == sum(len(x["payload"]) for x in _entries(r))
    assert [x["id"] for x in _entries(r)] == [b"6-0", b"7-0"]  # oldest dropped first
    assert r.memory_usage(keys.DEAD_LETTER_STREAM) < 50_000
