"""A forged entry far ahead of the tick grid never reaches the labels nor serves as a future."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from common import keys
from common.deadletter import DeadLetters
from common.schema import encode_state, entry_id
from common.streams import repair_forged_top
from labeler_svc.service import LabelerService
from tests.labeler_svc.synth import MARKET, make_states
from tests.labeler_svc.test_service import STATES, check_against_batch, publish, settings


@pytest.mark.parametrize("ahead_ms", [60_000, 10 * 365 * 86_400_000])
def test_future_entry_never_reaches_the_labels(r: redis.Redis, redis_url: str, ahead_ms: int) -> None:
    """A valid-looking state XADDed far ahead of the published grid is held, never labelled or used as a
    future; once the observer has repaired the stream (parked and deleted it) it is acknowledged and dropped."""
    states = make_states(3000)
    st = settings(redis_url)
    marker = keys.published_tick_key(MARKET)
    publish(r, states[:1000])
    r.set(marker, states[999].tick_ms)  # as the observer's publisher does
    svc = LabelerService(st, batch=700)
    svc.run(once=True)
    forged_tick = states[999].tick_ms + ahead_ms
    forged = dataclasses.replace(states[998], tick_ms=forged_tick)
    r.xadd(STATES, {keys.PAYLOAD_FIELD: encode_state(forged)}, id=entry_id(forged_tick))
    svc.run(once=True)  # read before the observer noticed it
    res = repair_forged_top(r, STATES, states[1000].tick_ms, 5_000, DeadLetters(r, "observer"))
    assert res.deleted == 1
    publish(r, states[1000:])
    r.set(marker, states[-1].tick_ms)
    svc.run(once=True)
    check_against_batch(r, states, st)  # every real state labelled exactly as in batch; the forged one acked
    assert svc.totals.duplicates == 0 and svc.totals.dead == 0
    assert len(r.xrange(keys.DEAD_LETTER_STREAM)) == 1
    svc.close()


def test_entry_above_the_grid_that_stays_is_labelled_in_order(r: redis.Redis, redis_url: str) -> None:
    """Held aside while above the grid; the stream keeps it (nothing repaired it), the grid catches up: it is
    labelled in ID order, like every other state."""
    states = make_states(2500)
    st = settings(redis_url)
    marker = keys.published_tick_key(MARKET)
    publish(r, states[:1000])
    r.set(marker, states[999].tick_ms)
    svc = LabelerService(st, batch=300)
    svc.run(once=True)
    publish(r, [states[1040]])  # 20 s ahead of the grid
    svc.run(once=True)
    assert svc.markets[STATES].ahead and svc.totals.read == 1000
    kept = states[:1000] + states[1040:]  # 1000..1039 can no longer be published (the observer counts them lost)
    publish(r, states[1041:])
    r.set(marker, states[-1].tick_ms)
    svc.run(once=True)
    check_against_batch(r, kept, st)
    assert svc.totals.duplicates == 0 and svc.totals.dead == 0 and not svc.markets[STATES].ahead
    svc.close()
