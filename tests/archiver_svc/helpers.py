"""Test helpers: a publisher of valid states at tick IDs, archive inspection."""

from __future__ import annotations

from collections import Counter

import numpy as np
import redis

from archiver_svc.reader import iter_objects
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import ArchiveError
from common import keys
from common.schema import Label, encode_label
from common.store import ObjectStore
from common.streams import publish_states

T0 = 1_763_856_000_000  # a window boundary (also a day boundary)


def publish(r: redis.Redis, market: str, start_ms: int, n: int, tick_ms: int = 500) -> list[str]:
    """XADD ``n`` valid states at tick IDs; returns the IDs Redis accepted."""
    pairs = synth_payloads(market, start_ms, n, tick_ms)
    res = publish_states(r, [(keys.states_stream(market), e, b) for e, b in pairs])
    assert res.errors == 0
    return [e for e, _ in pairs][: res.added] if res.duplicates == 0 else [e for e, _ in pairs]


def label_payload(market: str, tick_ms: int) -> bytes:
    return encode_label(
        Label(
            market=market,
            tick_ms=tick_ms,
            horizons_s=(30, 60, 300),
            rewards=np.full((3, 3), 0.01, np.float32),
            best=np.array([1, 1, 2], np.int8),
            valid=np.array([1, 1, 0], np.uint8),
            exit_kind=np.array([0, 0, 255], np.uint8),
        )
    )


def archived_ids(store: ObjectStore, kind: str, market: str) -> Counter[str]:
    """Every entry ID found in the archive, with its multiplicity (must all be 1)."""
    c: Counter[str] = Counter()
    for key, obj in iter_objects(store, kind, market):
        assert not isinstance(obj, ArchiveError), f"{key}: {obj}"
        c.update(obj.ids)
    return c


def stream_ids(r: redis.Redis, stream: str) -> list[str]:
    return [e.decode() for e, _ in r.xrange(stream)]
