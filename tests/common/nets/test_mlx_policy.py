"""The MLX definition beside the torch one: the same parameter names (safetensors weights interchangeable)
and the numpy reference's forward."""

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from common.features import N_OBS
from common.nets import mlx_policy, torch_policy
from common.policy import init_weights, numpy_forward, param_shapes


def test_same_names_and_shapes_as_torch_and_the_artefact() -> None:
    mlx_shapes = {k: tuple(v.shape) for k, v in tree_flatten(mlx_policy.Net(critic=True).parameters())}
    torch_shapes = {k: tuple(v.shape) for k, v in torch_policy.Net(critic=True).state_dict().items()}
    assert mlx_shapes == torch_shapes == {**param_shapes("actor"), **param_shapes("critic")}


def test_forward_equals_numpy_reference() -> None:
    rng = np.random.default_rng(6)
    w = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in init_weights(6, True).items()}
    net = mlx_policy.Net(critic=True)
    net.load_weights([(k, mx.array(v)) for k, v in w.items()])
    x = rng.uniform(-1, 1, (50, N_OBS)).astype(np.float32)
    np.testing.assert_allclose(np.array(net.actor(mx.array(x))), numpy_forward(w, x), atol=1e-5)
    np.testing.assert_allclose(np.array(net.critic(mx.array(x))), numpy_forward(w, x, "critic"), atol=1e-5)


def test_trainer_mlx_backend_builds_this_network() -> None:
    from trainer_svc.backends import make_backend

    b = make_backend("mlx", weights=init_weights(0, critic=True))
    assert type(b.net) is mlx_policy.Net and type(b.net.actor) is mlx_policy.Head  # type: ignore[attr-defined]
