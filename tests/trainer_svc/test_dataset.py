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


def test_pooled_markets_split_in_time_order_and_never_mix():
    from trainer_svc.algos.cloning import _future_rows_per_market
    from trainer_svc.dataset import pool
    from trainer_svc.env import build_batch

    hs = (30, 60, 300)
    a = generate(n_states=18_000, window_s=300, seed=11)
    b = generate(n_states=12_000, window_s=300, seed=12, start_ms=int(a.tick_ms[0]) + 3_000_000)
    la, _ = label_columns(a, hs, tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    lb, _ = label_columns(b, hs, tolerance_ms=2000, fee_rate=0.07, fee_exponent=1.0)
    states, labels, windows, parts = pool([("A", a, la), ("B", b, lb)])
    assert [(p.market, p.begin, p.end) for p in parts] == [("A", 0, len(a)), ("B", len(a), len(a) + len(b))]
    assert labels is not None and np.array_equal(labels.tick_ms, states.tick_ms)
    ds = make_dataset(states, labels, windows=windows, parts=parts)
    # windows are ordered by start; none spans two markets; each market's windows are all there
    assert np.all(np.diff(ds.windows.start_s) >= 0)
    in_a = ds.windows.begin < len(a)
    assert np.all(ds.windows.end[in_a] <= len(a)) and np.all(ds.windows.begin[~in_a] >= len(a))
    assert int(in_a.sum()) == len(make_dataset(a, la).windows)
    assert int((~in_a).sum()) == len(make_dataset(b, lb).windows)
    # the walk-forward split is in time order across markets, with the purge gap, and uses both markets
    tr, va, ho = (ds.splits[k] for k in ("train", "val", "holdout"))
    assert va.start_ms - tr.end_ms >= 300_000 and ho.start_ms - va.end_ms >= 300_000
    for sp in (tr, va, ho):
        per = ds.describe()[sp.name]["windows_per_market"]
        assert per["A"] > 0 and per["B"] > 0 and per["A"] + per["B"] == sp.windows.size
    # an episode replays one market's window only
    hold = build_batch(ds.states, ds.windows, ho.windows)
    for e in range(hold.n_episodes):
        r = hold.rows[e][hold.rows[e] >= 0]
        assert (r < len(a)).all() or (r >= len(a)).all()
        assert np.all(np.diff(hold.tick_ms[e, : hold.length[e]]) > 0)
    # future rows of the pooled set equal each market's own, never crossing markets
    j, ok, _, _ = _future_rows_per_market(ds, 30)
    ja, oka, _, _ = _future_rows_per_market(make_dataset(a, la), 30)
    np.testing.assert_array_equal(j[: len(a)], ja)
    np.testing.assert_array_equal(ok[: len(a)], oka)
    assert np.all(j[len(a) :] >= len(a))
