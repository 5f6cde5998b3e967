"""archiver_svc.redis_replies: the reply shapes the archiver reads (RESP2 lists, RESP3 dicts, parsed entries)."""

from __future__ import annotations

from archiver_svc.redis_replies import entries_of, payload_of, stream_replies

E1 = [b"1-0", [b"d", b"x"]]
E2 = [b"2-0", [b"d", b"y"]]


def test_stream_replies_of_each_shape() -> None:
    assert stream_replies(None) == [] and stream_replies([]) == []
    assert stream_replies([[b"s1", [E1]], [b"s2", [E2]]]) == [("s1", [E1]), ("s2", [E2])]  # RESP2
    assert stream_replies({b"s1": [E1, E2]}) == [("s1", [E1, E2])]  # raw RESP3
    assert stream_replies({b"s1": [[E1, E2]]}) == [("s1", [E1, E2])]  # redis-py's RESP3 parsing
    assert entries_of([[b"s1", [E1]], [b"s2", [E2]]], "s2") == [E2]
    assert entries_of([[b"s1", [E1]]], "nope") == []


def test_payload_of_list_dict_missing() -> None:
    assert payload_of([b"a", b"1", b"d", b"2"], b"d") == b"2"
    assert payload_of({b"d": b"3"}, b"d") == b"3"
    assert payload_of([b"a", b"1"], b"d") is None
    assert payload_of(None, b"d") is None and payload_of([], b"d") is None
