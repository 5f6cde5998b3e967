"""Issue 10, defects 5 and 9: the trader refuses exactly what the archiver and the labeler refuse (one
validator), and parks a bad entry only when no other service parked it already."""

from __future__ import annotations

import numpy as np

from common import keys
from common.artefact import promote
from common.deadletter import DeadLetters
from common.schema import encode_state, entry_id
from common.store import LocalStore
from tests.archiver_svc.poison import poisoned
from tests.trader_svc.helpers import T0, encoded, make_state, save_good, synth_raw
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

P = "val-pol"
M = "BTC-15M"


def test_trader_refuses_inconsistent_states_and_parks_once(r, redis_url, tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    save_good(store, P, "v1")
    promote(store, P, "v1")
    trader = Trader(TraderConfig("t-val", P, [M], PaperConfig(), tick_ms=100, block_ms=10), redis_url, store)
    rng = np.random.default_rng(3)
    stream = keys.states_stream(M)
    trader.start()
    try:
        r.xadd(stream, {keys.PAYLOAD_FIELD: encoded(M, T0, rng)}, id=entry_id(T0))
        assert trader.poll_once() == 1
        bad = poisoned(M, T0 + 50, dup_tick_ms=T0)
        # the archiver saw the first two already and parked them
        archiver = DeadLetters(r, "archiver")
        for k, (eid, payload, what) in enumerate(bad):
            r.xadd(stream, {keys.PAYLOAD_FIELD: payload}, id=eid)
            if k < 2:
                archiver.park(stream, eid, what, payload)
            assert trader.poll_once() == 0, what  # refused: never decided on
        assert trader.stats.dead == 4
        dl = r.xrange(keys.DEAD_LETTER_STREAM)
        assert [f[b"id"].decode() for _, f in dl] == [e for e, _, _ in bad]
        assert [f[b"service"] for _, f in dl] == [b"archiver", b"archiver", b"trader", b"trader"]
        assert b"NaN" in dl[2][1][b"reason"] and b"infinite" in dl[3][1][b"reason"]
        t = T0 + 100
        r.xadd(stream, {keys.PAYLOAD_FIELD: encode_state(make_state(M, t, synth_raw(rng, t)))}, id=entry_id(t))
        assert trader.poll_once() == 1 and trader.stats.last_tick[M] == t
    finally:
        trader.close()
