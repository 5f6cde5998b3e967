"""A forged entry far ahead of the tick grid never reaches the archive and never holds a window open."""

from __future__ import annotations

import pytest
import redis

from archiver_svc.synth import synth_payloads
from common import keys
from common.deadletter import DeadLetters
from common.store import LocalStore
from common.streams import repair_forged_top
from tests.archiver_svc.helpers import T0, archived_ids, publish, stream_ids
from tests.archiver_svc.test_service import M, S, make, pending


@pytest.mark.parametrize("ahead_ms", [60_000, 10 * 365 * 86_400_000])
@pytest.mark.parametrize("restart", [False, True])
def test_forged_entry_is_forgotten_after_the_repair(r: redis.Redis, tmp_path, ahead_ms: int, restart: bool) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 65)
    a = make(r, store)
    for _ in range(3):
        a.step(block=False)
    forged_ms = T0 + 32_000 + ahead_ms
    r.xadd(S, {keys.PAYLOAD_FIELD: synth_payloads(M, forged_ms, 1)[0][1]}, id=f"{forged_ms}-0")
    for _ in range(3):
        a.step(block=False)  # delivered and buffered before the observer noticed
    assert a.delivered_ms[S] == forged_ms
    assert repair_forged_top(r, S, T0 + 32_500, 5_000, DeadLetters(r, "observer")).deleted == 1
    if restart:  # the archiver was down during the repair: the forged ID is a deleted entry in its pending list
        a._pool.shutdown()
        a = make(r, store, "a1")
    publish(r, M, T0 + 32_500, 200)  # the stream flows on (100 s), past the forged ID in the 60 s case
    for _ in range(20):
        a.step(block=False)
    assert pending(r) <= 2 * 20 + 2  # closed windows written and acked: nothing held open
    a.run(once=True, final=True)
    assert pending(r) == 0
    got = archived_ids(store, "states", M)
    assert sorted(got) == stream_ids(r, S) and set(got.values()) == {1}  # the forged payload is not archived
    assert len(r.xrange(keys.DEAD_LETTER_STREAM)) == 1
