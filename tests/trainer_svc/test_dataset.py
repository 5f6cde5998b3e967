import numpy as np

from common.features import market_features
from trainer_svc.dataset import make_dataset
from trainer_svc.hindsight import fallback_labels, label_columns
from trainer_svc.synthetic import generate


def test_walk_forward_whole_windows_purge_gap_time_order():
    s = generate(n_states=36_000, window_s=300, seed=4)
    lab, _ = label_columns(s, (30, 60, 300), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    ds = make_dataset(s, lab)
    assert ds.purge_s == 300
    tr, va, ho = (ds.splits[k] for k in ("train", "val", "holdout"))
    assert tr.end_ms < va.start_ms and va.end_ms < ho.start_ms
    assert va.start_ms - tr.end_ms >= 300_000 and ho.start_ms - va.end_ms >= 300_000
    rows = [sp.rows(ds.windows) for sp in (tr, va, ho)]
    assert sum(r.size for r in rows) + sum(int(ds.windows.lengths[k]) for k in ds.dropped_windows) == len(s)
    assert not set(rows[0]) & set(rows[1]) and not set(rows[1]) & set(rows[2])


def test_features_use_no_future_information():
    s = generate(n_states=6_000, seed=5)
    cut = 3_000
    raw = s.raw.copy()
    raw[cut:] *= 1.5  # change the whole future
    before = market_features(raw[:cut], s.tick_ms[:cut])
    np.testing.assert_array_equal(before, s.features[:cut])


def test_fallback_labels_agree_with_labeler():
    s = generate(n_states=12_000, seed=6)
    ours = fallback_labels(s, (30, 60, 300))
    theirs, src = label_columns(s, (30, 60, 300), tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    if src != "labeler_svc":
        return
    v = theirs.valid.astype(bool)
    assert np.array_equal(ours.valid.astype(bool), v)
    np.testing.assert_allclose(ours.rewards[v], theirs.rewards[v], atol=1e-6)
    assert np.array_equal(ours.best, theirs.best)
