import numpy as np
import pytest

from common.features import N_OBS
from common.policy import init_weights, numpy_forward
from trainer_svc.backends import make_backend, resolve


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(0)
    w = init_weights(3, critic=True)
    return {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in w.items()}


def test_auto_backend_resolution():
    import platform

    expect = "mlx" if (platform.system(), platform.machine()) == ("Darwin", "arm64") else "torch"
    assert resolve("auto") == expect
    with pytest.raises(ValueError):
        resolve("jax")


def test_forward_parity_torch_mlx_numpy(weights):
    x = np.random.default_rng(1).uniform(-1, 1, (64, N_OBS)).astype(np.float32)
    ref, ref_v = numpy_forward(weights, x), numpy_forward(weights, x, "critic")[:, 0]
    outs = {}
    for name in ("torch", "mlx"):
        b = make_backend(name, weights=weights)
        outs[name] = b.forward(x)
        np.testing.assert_allclose(outs[name], ref, atol=1e-5)
        np.testing.assert_allclose(b.value(x), ref_v, atol=1e-5)
        got = b.get_weights()
        assert set(got) == set(weights) and all(np.array_equal(got[k], weights[k]) for k in weights)
    np.testing.assert_allclose(outs["torch"], outs["mlx"], atol=1e-5)


def test_training_steps_agree_across_backends(weights):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (128, N_OBS)).astype(np.float32)
    q = rng.dirichlet(np.ones(3), 128).astype(np.float32)
    w = rng.uniform(0.5, 2, 128).astype(np.float32)
    bt, bm = make_backend("torch", weights=weights), make_backend("mlx", weights=weights)
    for _ in range(3):
        assert bt.bc_step(x, q, w) == pytest.approx(bm.bc_step(x, q, w), abs=1e-5)
    batch = {
        "obs": x,
        "act": rng.integers(0, 3, 128),
        "logp": np.full(128, np.log(1 / 3), np.float32),
        "adv": rng.standard_normal(128).astype(np.float32),
        "ret": rng.standard_normal(128).astype(np.float32),
        "val": np.zeros(128, np.float32),
    }
    hp = {"clip": 0.2, "value_clip": 0.2, "entropy": 0.03, "max_grad_norm": 0.5}
    st, sm = bt.ppo_step(batch, hp), bm.ppo_step(batch, hp)
    for k in st:
        assert st[k] == pytest.approx(sm[k], abs=1e-4), k
    wt, wm = bt.get_weights(), bm.get_weights()
    assert max(float(np.abs(wt[k] - wm[k]).max()) for k in wt) < 1e-5
