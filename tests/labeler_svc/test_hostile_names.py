"""Issue 10, defect 4: the labeler never labels a stream whose market name is outside the grammar."""

from __future__ import annotations

import redis

from common import keys
from common.schema import encode_state, entry_id
from common.settings import Settings
from labeler_svc.service import LabelerService
from tests.labeler_svc.synth import MARKET, make_states

HOSTILE = [f"fusion:{{{MARKET}/.}}:states", "fusion:{..}:states", "fusion:{x\nFORGED}:states", b"fusion:{\xff}:states"]


def test_hostile_states_streams_are_not_labelled(r: redis.Redis, redis_url: str) -> None:
    states = make_states(1500)
    for s in [keys.states_stream(MARKET), *HOSTILE]:
        for st in states:
            r.xadd(s, {keys.PAYLOAD_FIELD: encode_state(st)}, id=entry_id(st.tick_ms))
    svc = LabelerService(Settings(redis_url=redis_url, label_settle_wait_s=60, label_horizons_s=[30, 60, 300]))
    try:
        svc.run(once=True)
        assert svc.totals.labelled > 0 and r.xlen(keys.labels_stream(MARKET)) == svc.totals.labelled
    finally:
        svc.close()
    labels = sorted(k for k in r.scan_iter(match="fusion:*:labels"))
    assert labels == [keys.labels_stream(MARKET).encode()]  # no labels stream for a hostile name
    for s in HOSTILE:
        assert r.xlen(s) == len(states) and not r.xinfo_groups(s)
