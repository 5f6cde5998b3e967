"""Issue 10, defect 5: training on an archive that holds poisoned entries and a corrupt object completes.

Before: one schema-valid state whose payload tick differs from its entry ID made every ``fusion train`` of
the market die with ``states must be sorted by tick_ms with unique ticks``."""

from __future__ import annotations

import numpy as np

from archiver_svc.windows import encode_object, object_key
from common.features import FEATURE_SET
from common.schema import PolymarketWindow, State, encode_state
from common.store import LocalStore
from tests.archiver_svc.poison import poisoned
from trainer_svc.pipeline import JobParams, run_training
from trainer_svc.synthetic import generate

M = "POISON-15M"
W = 600_000


def test_training_on_a_poisoned_archive_completes(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    cols = generate(n_states=10_800)
    wins: dict[int, dict[str, bytes]] = {}
    for i in range(len(cols)):
        t = int(cols.tick_ms[i])
        pm = PolymarketWindow(cols.slugs[i], "0x1", "1", "2", t // 900_000 * 900_000, t // 900_000 * 900_000 + 900_000)
        s = State(M, t, cols.raw[i], cols.features[i], FEATURE_SET, int(cols.flags[i]), pm)
        wins.setdefault(t - t % W, {})[f"{t}-0"] = encode_state(s)
    t_bad = int(cols.tick_ms[3000]) + 100  # between two ticks, duplicating the first tick of the archive
    for eid, payload, _ in poisoned(M, t_bad, dup_tick_ms=int(cols.tick_ms[0])):
        wins[t_bad - t_bad % W][eid] = payload
    keys = []
    for ws, entries in sorted(wins.items()):
        keys.append(object_key("states", M, ws))
        store.put(keys[-1], encode_object("states", M, ws, W, entries))
    store.put(keys[7], b"\x1f\x8b\x08 not gzip")  # a corrupt object too
    out = run_training(JobParams(market=M, store_url=store.url, promote=False, overrides={"epochs": 1}))
    data = out["data"]
    assert data["n_states"] == len(cols) - 600 and data["problems"] == 5
    assert np.isfinite(out["holdout"]["candidate"]["pnl_usd"]) if "pnl_usd" in out["holdout"]["candidate"] else True
    assert any(k.key.startswith(f"quarantine/{keys[7]}") for k in store.list("quarantine/"))
