import numpy as np
import pytest

from common.features import N_OBS
from common.policy import (
    BUY_DOWN,
    BUY_UP,
    HOLD,
    WeightsError,
    check_weights,
    fast_forward,
    init_weights,
    numpy_forward,
    param_shapes,
    transition,
)


def test_transition_table():
    side = np.array([0, 0, 0, 1, 1, 1, -1, -1, -1])
    act = np.array([HOLD, BUY_UP, BUY_DOWN] * 3)
    new, opened, closed = transition(side, act)
    assert new.tolist() == [0, 1, -1, 1, 1, 0, -1, 0, -1]
    assert opened.tolist() == [False, True, True] + [False] * 6
    assert closed.tolist() == [False] * 5 + [True, False, True, False]


def test_shapes_and_check_weights():
    w = init_weights(0, critic=True)
    check_weights(w)
    assert w["actor.fc1.weight"].shape == (64, N_OBS) and w["actor.out.weight"].shape == (3, 64)
    assert w["critic.out.weight"].shape == (1, 64)
    assert set(param_shapes("actor")) <= set(w)
    bad = dict(w)
    bad["actor.fc2.weight"] = np.zeros((64, 32), np.float32)
    with pytest.raises(WeightsError, match="shape"):
        check_weights(bad)
    nan = dict(w)
    nan["actor.out.bias"] = np.array([np.nan, 0, 0], np.float32)
    with pytest.raises(WeightsError, match="non-finite"):
        check_weights(nan)
    with pytest.raises(WeightsError, match="missing"):
        check_weights({k: v for k, v in w.items() if k != "actor.ln1.bias"})


def test_fast_forward_matches_reference_and_layernorm_math():
    rng = np.random.default_rng(1)
    w = {k: v + 0.2 * rng.standard_normal(v.shape).astype(np.float32) for k, v in init_weights(2).items()}
    x = rng.uniform(-1, 1, (100, N_OBS)).astype(np.float32)
    np.testing.assert_allclose(fast_forward(w, x), numpy_forward(w, x), atol=1e-5)
    # hand-written first layer: LayerNorm normalises each row to mean 0, var 1 before gain/bias
    h = x.astype(np.float64) @ w["actor.fc1.weight"].T + w["actor.fc1.bias"]
    z = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-5)
    assert np.allclose(z.mean(1), 0, atol=1e-9) and np.allclose(z.var(1), 1, atol=1e-3)
