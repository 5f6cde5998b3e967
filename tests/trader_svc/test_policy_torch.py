"""Parity: on the same states and weights the PyTorch policy acts like the MLX policy and the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.features import N_OBS, agent_features, market_features, observation
from common.policy import WeightsError, init_weights, numpy_forward
from tests.trader_svc.helpers import T0, synth_raw
from trader_svc.policy_torch import TorchPolicy


def trained_like(seed: int) -> dict[str, np.ndarray]:
    """init weights with non-trivial LayerNorm/bias/output scales (so actions are not near-ties)."""
    rng = np.random.default_rng(seed)
    w = init_weights(seed)
    for k in w:
        if k.endswith(".bias") or ".ln" in k:
            w[k] = (w[k] + rng.normal(0, 0.3, w[k].shape)).astype(np.float32)
    w["actor.out.weight"] = (w["actor.out.weight"] * 300).astype(np.float32)
    return w


def observations(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ticks = T0 + 500 * np.arange(n, dtype=np.int64)
    raw = np.stack([synth_raw(rng, int(t)) for t in ticks])
    has = rng.integers(0, 2, n).astype(np.float64)
    side = has * rng.choice([-1.0, 1.0], n)
    return observation(market_features(raw, ticks), agent_features(has, side, rng.normal(0, 0.2, n)))


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_equals_mlx_and_numpy(seed: int) -> None:
    from trainer_svc.backends.mlx_backend import MlxBackend

    w = trained_like(seed)
    obs = observations(200, seed)
    ref = numpy_forward(w, obs)
    pol = TorchPolicy(w)
    lt = pol.logits(obs)
    lm = MlxBackend(w).forward(obs)
    np.testing.assert_allclose(lt, ref, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(lm, ref, atol=1e-4, rtol=1e-5)
    srt = np.sort(ref, axis=1)
    clear = srt[:, -1] - srt[:, -2] > 1e-4  # float32 rounding (~1e-6 here) cannot flip these argmaxes
    assert clear.mean() > 0.97
    a_ref = ref.argmax(1)
    assert len(set(a_ref.tolist())) >= 2  # the states exercise more than one action
    np.testing.assert_array_equal(pol.act(obs)[clear], a_ref[clear])
    np.testing.assert_array_equal(lm.argmax(1)[clear], a_ref[clear])


def test_inference_mode_eval_one_thread_and_validation() -> None:
    pol = TorchPolicy(init_weights(0))
    assert not pol.net.training and torch.get_num_threads() == 1
    assert all(not p.requires_grad for p in pol.net.parameters())
    assert pol.act(np.zeros((4, N_OBS), np.float32)).shape == (4,)
    with pytest.raises(ValueError):
        pol.logits(np.zeros((2, 17), np.float32))
    bad = init_weights(0)
    bad["actor.ln1.weight"][0] = np.nan
    with pytest.raises(WeightsError):
        TorchPolicy(bad)
