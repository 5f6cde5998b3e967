"""A job or a load that cannot fit the memory budget is refused up front, naming the setting to change."""

from __future__ import annotations

import time

import numpy as np
import pytest

from archiver_svc.budget import TooLarge
from archiver_svc.compact import compact
from archiver_svc.rawcols import TRAIN_FIELDS, RawColumns
from archiver_svc.reader import estimate_load, load_market
from archiver_svc.synth import synth_payloads
from common.settings import get_settings
from common.store import LocalStore
from tests.archiver_svc.helpers import T0
from tests.archiver_svc.test_reader import write_archive
from trainer_svc.dataset import pool
from trainer_svc.pipeline import JobParams, run_training

M = "BTC-15M"


@pytest.fixture
def budget(monkeypatch):
    def set_gb(gb: float) -> None:
        monkeypatch.setenv("FUSION_TRAIN_MAX_MEMORY_GB", str(gb))
        get_settings.cache_clear()

    yield set_gb
    get_settings.cache_clear()


def test_training_job_refused_before_any_work(tmp_path, budget) -> None:
    budget(0.5)
    p = JobParams(market="AAA-5M,BBB-5M", synthetic=1_000_000, store_url=f"file://{tmp_path}", promote=False)
    t = time.perf_counter()
    with pytest.raises(TooLarge, match="FUSION_TRAIN_MAX_MEMORY_GB") as e:
        run_training(p)
    assert time.perf_counter() - t < 2.0  # refused from the estimate, not after generating 2 M states
    assert "2,000,000 states" in str(e.value)


def test_reader_refuses_and_estimates_exactly_from_manifests(tmp_path, budget) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, synth_payloads(M, T0 + 1_000, 200))
    windows = estimate_load(store, M, None, None, labels=False, raw_fields=TRAIN_FIELDS, window_s=10)
    assert windows.rows == 11 * 20  # an upper bound from the window count (10 s windows at 0.5 s)
    compact(store, now_ms=T0 + 3 * 86_400_000)
    exact = estimate_load(store, M, None, None, labels=False, raw_fields=TRAIN_FIELDS)
    assert exact.rows == 200
    full = estimate_load(store, M, None, None, labels=False)
    assert full.bytes > 4 * exact.bytes  # all 70 float64 raw fields vs the trainer's 9 narrow ones
    budget(1e-6)
    with pytest.raises(TooLarge, match="FUSION_TRAIN_MAX_MEMORY_GB"):
        load_market(store, M)
    assert len(load_market(store, M, max_memory_gb=1.0).states) == 200


def test_pool_keeps_only_loaded_fields(tmp_path) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, synth_payloads(M, T0, 100), market=M)
    write_archive(store, synth_payloads("ETH-15M", T0, 60), market="ETH-15M")
    a = load_market(store, M, labels=False, raw_fields=TRAIN_FIELDS).states
    b = load_market(store, "ETH-15M", labels=False, raw_fields=TRAIN_FIELDS).states
    states, _, _, parts = pool([(M, a, None), ("ETH-15M", b, None)])
    assert isinstance(states.raw, RawColumns) and len(states.raw) == 160 and set(states.raw.cols) == set(TRAIN_FIELDS)
    assert states.raw.nbytes < 160 * 9 * 8  # narrower than the 9 fields as float64
    assert [p.market for p in parts] == [M, "ETH-15M"] and np.all(np.diff(states.tick_ms[:100]) > 0)
