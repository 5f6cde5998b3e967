"""The one torch definition of the policy network: numpy parity, artefact names, and both users build it."""

import numpy as np
import pytest
import torch

from common.features import N_OBS
from common.nets.torch_policy import Head, Net
from common.policy import N_ACTIONS, init_weights, numpy_forward, param_shapes


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in init_weights(seed, True).items()}


@pytest.mark.parametrize("hidden", [64, 16])
def test_names_and_shapes_are_the_artefacts(hidden: int) -> None:
    sd = Net(critic=True, hidden=hidden).state_dict()
    want = {**param_shapes("actor", hidden), **param_shapes("critic", hidden)}
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert set(Net(critic=False).state_dict()) == set(param_shapes("actor"))


def test_forward_equals_numpy_reference() -> None:
    w = _weights(4)
    net = Net(critic=True)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=True)
    x = np.random.default_rng(5).uniform(-1, 1, (50, N_OBS)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net.actor(torch.from_numpy(x)).numpy(), numpy_forward(w, x), atol=1e-5)
        np.testing.assert_allclose(net.critic(torch.from_numpy(x)).numpy(), numpy_forward(w, x, "critic"), atol=1e-5)


def test_trainer_backend_and_trader_build_this_network() -> None:
    from trader_svc.policy_torch import TorchPolicy
    from trainer_svc.backends import make_backend

    backend = make_backend("torch", weights=init_weights(0, critic=True))
    assert type(backend.net) is Net and type(backend.net.actor) is Head  # type: ignore[attr-defined]
    pol = TorchPolicy(init_weights(0))
    assert type(pol.net) is Head and pol.net.out.out_features == N_ACTIONS
