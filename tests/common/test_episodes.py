"""common.episodes on real Redis: a close whose time is before the open episode's start does not end it (two
replicas' background threads interleave: one's first good tick can be processed after the other opened a gap)."""

from __future__ import annotations

import redis

from common.episodes import Episodes


def test_a_close_from_before_the_episode_started_leaves_it_open(r: redis.Redis) -> None:
    sent: list[tuple[str, dict]] = []
    ep = Episodes(r, notify=lambda kind, text, key, **f: sent.append((kind, f)) or True, enabled=lambda: True)
    other = Episodes(r, notify=lambda kind, text, key, **f: sent.append((kind, f)) or True, enabled=lambda: True)
    assert ep.open("data-gap", "M1", "gap", since_ms=5_000)
    assert not other.close("data-gap", "M1", "good", at_ms=0)  # the replica's first good tick, seen late
    assert not other.open("data-gap", "M1", "gap", since_ms=5_000)  # still open: not alerted twice
    assert other.close("data-gap", "M1", "good", at_ms=25_000)
    assert [k for k, _ in sent] == ["data-gap", "data-gap-recovered"] and sent[1][1]["gap_s"] == 20.0


def test_the_same_in_memory_when_redis_refuses() -> None:
    sent: list[str] = []
    ep = Episodes(None, notify=lambda kind, *a, **f: sent.append(kind) or True, enabled=lambda: True)
    assert ep.open("data-gap", "M1", "gap", since_ms=5_000)
    assert not ep.close("data-gap", "M1", "good", at_ms=0)
    assert ep.close("data-gap", "M1", "good", at_ms=25_000)
    assert sent == ["data-gap", "data-gap-recovered"]
