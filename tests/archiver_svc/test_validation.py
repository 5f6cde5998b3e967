"""Issue 10, defects 5 and 9: the archiver, the labeler and the reader refuse the same entries (one validator),
each bad entry is parked once across services, and nothing the rest of the system refuses reaches the archive."""

from __future__ import annotations

import numpy as np
import redis

from archiver_svc.reader import load_market
from archiver_svc.service import Archiver
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import decode_object, encode_object, object_key
from common import keys
from common.settings import Settings
from common.store import LocalStore
from labeler_svc.service import LabelerService
from tests.archiver_svc.helpers import T0, archived_ids, publish
from tests.archiver_svc.poison import poisoned

M = "BTC-15M"
S = keys.states_stream(M)


def make(r: redis.Redis, store, name: str = "a1") -> Archiver:
    return Archiver(r, store, consumer=name, window_s=10, grace_s=1, block_ms=20, count=50)


def test_inconsistent_states_parked_once_and_never_archived(r: redis.Redis, redis_url: str, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    good = publish(r, M, T0, 10)  # T0 .. T0 + 4.5 s
    bad = poisoned(M, T0 + 4_600, dup_tick_ms=T0)
    for eid, payload, _ in bad:
        r.xadd(S, {keys.PAYLOAD_FIELD: payload}, id=eid)
    good += publish(r, M, T0 + 5_000, 30)
    make(r, store).run(once=True, final=True)
    lab = LabelerService(Settings(redis_url=redis_url, label_settle_wait_s=60))
    lab.run(once=True)
    lab.close()
    # nothing refused is archived; everything else is, once; every entry is acked
    got = archived_ids(store, "states", M)
    assert sorted(got) == sorted(good) and set(got.values()) == {1}
    assert int(r.xpending(S, keys.ARCHIVER_GROUP)["pending"]) == 0
    # each bad entry parked once, by the first service, with its reason
    dl = r.xrange(keys.DEAD_LETTER_STREAM)
    assert sorted(f[b"id"].decode() for _, f in dl) == sorted(e for e, _, _ in bad)
    by_id = {f[b"id"].decode(): f for _, f in dl}
    assert b"market" in by_id[bad[0][0]][b"reason"] and b"!= tick" in by_id[bad[1][0]][b"reason"]
    assert b"NaN" in by_id[bad[2][0]][b"reason"] and b"infinite" in by_id[bad[3][0]][b"reason"]
    assert {f[b"service"] for _, f in dl} <= {b"archiver", b"labeler"}
    # the archive loads in order, without the bad rows
    md = load_market(store, M)
    assert md.states.tick_ms.tolist() == [int(e.split("-")[0]) for e in good] and md.problems == []


def test_merge_drops_bad_entries_of_an_old_object(r: redis.Redis, tmp_path) -> None:
    """An object written before validation existed holds bad entries: the archiver's merge does not carry them
    over (nor resurrect them), it quarantines them once."""
    store = LocalStore(tmp_path / "s")
    pairs = synth_payloads(M, T0, 20)
    old = dict(pairs[:8])
    bad = poisoned(M, T0 + 4_100, dup_tick_ms=T0)
    old.update({e: p for e, p, _ in bad})
    key = object_key("states", M, T0)
    store.put(key, encode_object("states", M, T0, 10_000, old))
    publish(r, M, T0, 20)
    a = make(r, store)
    a.run(once=True, final=True)
    obj = decode_object(store.get(key))
    assert obj.ids == [e for e, _ in pairs]  # the good old entries and the new ones, no bad one
    q = sorted(o.key for o in store.list("quarantine/"))
    assert len(q) == 2 and q[0].startswith(f"quarantine/{key}") and q[1].endswith(".json")
    # a second run over the same window changes nothing and quarantines nothing more
    r.xgroup_destroy(S, keys.ARCHIVER_GROUP)
    make(r, store).run(once=True, final=True)
    assert decode_object(store.get(key)).ids == obj.ids
    assert sorted(o.key for o in store.list("quarantine/")) == q
    md = load_market(store, M)
    assert bool(np.all(np.diff(md.states.tick_ms) > 0)) and len(md.states) == 20


def test_object_moved_by_the_reader_is_not_resurrected(r: redis.Redis, tmp_path) -> None:
    """The reader moves a corrupt object to quarantine; the archiver then writes the window from the stream's
    (validated) entries: the corrupt bytes never come back and nothing is quarantined or reported twice."""
    store = LocalStore(tmp_path / "s")
    key = object_key("states", M, T0)
    store.put(key, b"\x1f\x8b\x08garbage")
    first = load_market(store, M)
    assert len(first.problems) == 1 and not store.exists(key)
    q = sorted(o.key for o in store.list("quarantine/"))
    ids = publish(r, M, T0, 20)
    make(r, store).run(once=True, final=True)
    assert decode_object(store.get(key)).ids == ids
    assert sorted(o.key for o in store.list("quarantine/")) == q
    again = load_market(store, M)
    assert again.problems == [] and again.states.tick_ms.tolist() == [int(e.split("-")[0]) for e in ids]
