"""The policy contract shared by the trainer and the trader: actions, position transitions,
the network architecture, its weight names and a numpy reference forward.

Actions (the upstream's semantics, one position per market):

* ``HOLD`` (0): nothing.
* ``BUY_UP`` (1): flat -> open Up (buy the Up token at its ask); holding Down -> close Down
  (sell at the Down bid); holding Up -> no-op.
* ``BUY_DOWN`` (2): symmetric (flat -> open Down; holding Up -> close Up; holding Down -> no-op).

A position never flips in one step: closing leaves the agent flat.

Architecture ``mlp-ln-tanh``: ``x (N_OBS = 23) -> Linear(64) -> LayerNorm -> tanh -> Linear(64) -> LayerNorm
-> tanh -> Linear(3)`` (actor logits). PPO adds a critic of the same shape with one output and its
own weights. Weights are float32, Linear weights are ``[out, in]`` (``y = x @ W.T + b``), names
``actor.fc1.weight`` ... ``actor.out.bias`` and optionally ``critic.*``.

Guarantees: :func:`numpy_forward` is the reference the torch and MLX implementations are tested
against (atol 1e-5); :func:`check_weights` rejects any weight set whose names, shapes or values
(non-finite) do not match the architecture, so a bad file never reaches a forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import FEATURE_SET, N_OBS, OBSERVATION_FEATURES
from common.schema import ACTIONS, STATE_VERSION

HOLD, BUY_UP, BUY_DOWN = 0, 1, 2
N_ACTIONS = len(ACTIONS)
FLAT, SIDE_UP, SIDE_DOWN = 0, 1, -1

ARCH_TYPE = "mlp-ln-tanh"
INPUT_DIM = N_OBS
HIDDEN = 64
LN_EPS = 1e-5
LAYERS: tuple[str, ...] = ("fc1", "ln1", "fc2", "ln2", "out")

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]


class WeightsError(ValueError):
    """A weight set that does not match the architecture."""


# ------------------------------------------------------------------ transitions


def transition(
    side: npt.NDArray[Any], action: npt.NDArray[Any]
) -> tuple[I8, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Vectorised position transition.

    ``side`` (N,) in {0, +1 (Up), -1 (Down)}, ``action`` (N,) in {0, 1, 2}.
    Returns ``(new_side, opened, closed)``; ``opened``/``closed`` say what trade the action asks for
    (the caller may still refuse it, e.g. when the book side is empty).
    """
    s = np.asarray(side, dtype=np.int8)
    a = np.asarray(action)
    flat = s == FLAT
    open_up = flat & (a == BUY_UP)
    open_dn = flat & (a == BUY_DOWN)
    close = ((s == SIDE_UP) & (a == BUY_DOWN)) | ((s == SIDE_DOWN) & (a == BUY_UP))
    new = s.copy()
    new[open_up] = SIDE_UP
    new[open_dn] = SIDE_DOWN
    new[close] = FLAT
    return new, open_up | open_dn, close


# ------------------------------------------------------------------ architecture


def architecture(hidden: int = HIDDEN) -> dict[str, Any]:
    """The ``architecture`` block of a model's meta.json."""
    return {
        "type": ARCH_TYPE,
        "input_dim": INPUT_DIM,
        "hidden": hidden,
        "n_actions": N_ACTIONS,
        "ln_eps": LN_EPS,
    }


def param_shapes(head: str = "actor", hidden: int = HIDDEN) -> dict[str, tuple[int, ...]]:
    """Names and shapes of one head's parameters (``actor``: 3 outputs, ``critic``: 1)."""
    out = N_ACTIONS if head == "actor" else 1
    return {
        f"{head}.fc1.weight": (hidden, INPUT_DIM),
        f"{head}.fc1.bias": (hidden,),
        f"{head}.ln1.weight": (hidden,),
        f"{head}.ln1.bias": (hidden,),
        f"{head}.fc2.weight": (hidden, hidden),
        f"{head}.fc2.bias": (hidden,),
        f"{head}.ln2.weight": (hidden,),
        f"{head}.ln2.bias": (hidden,),
        f"{head}.out.weight": (out, hidden),
        f"{head}.out.bias": (out,),
    }


def init_weights(seed: int = 0, critic: bool = False, hidden: int = HIDDEN) -> dict[str, F32]:
    """Deterministic initial weights (both backends start from these, so runs are comparable).

    Linear layers: orthogonal with gain sqrt(2) for hidden layers, 0.01 (actor) / 1.0 (critic) for the
    output; zero biases; LayerNorm weight 1, bias 0.
    """
    rng = np.random.default_rng(seed)
    w: dict[str, F32] = {}
    for head in ("actor", "critic") if critic else ("actor",):
        for name, shape in param_shapes(head, hidden).items():
            layer = name.split(".")[1]
            if name.endswith(".bias"):
                w[name] = np.zeros(shape, np.float32)
            elif layer.startswith("ln"):
                w[name] = np.ones(shape, np.float32)
            else:
                gain = np.sqrt(2.0) if layer != "out" else (0.01 if head == "actor" else 1.0)
                a = rng.standard_normal((max(shape), min(shape)))
                q, r = np.linalg.qr(a)
                q = q * np.sign(np.diag(r))
                q = q if shape[0] >= shape[1] else q.T
                w[name] = (gain * q[: shape[0], : shape[1]]).astype(np.float32)
    return w


def check_weights(weights: Mapping[str, Any], critic: bool | None = None, hidden: int = HIDDEN) -> None:
    """Raise :class:`WeightsError` unless ``weights`` hold exactly a valid actor (+ critic if present
    or required) of this architecture with finite float32 values."""
    want = dict(param_shapes("actor", hidden))
    has_critic = any(k.startswith("critic.") for k in weights)
    if critic or (critic is None and has_critic):
        want.update(param_shapes("critic", hidden))
    missing = sorted(set(want) - set(weights))
    extra = sorted(set(weights) - set(want))
    if missing or extra:
        raise WeightsError(f"weight names differ: missing={missing} unexpected={extra}")
    for k, shape in want.items():
        v = np.asarray(weights[k])
        if v.shape != shape:
            raise WeightsError(f"{k} has shape {v.shape}, expected {shape}")
        if v.dtype != np.float32:
            raise WeightsError(f"{k} has dtype {v.dtype}, expected float32")
        if not np.all(np.isfinite(v)):
            raise WeightsError(f"{k} has non-finite values")


def _layer_norm(h: npt.NDArray[Any], g: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    mu = h.mean(axis=-1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
    out: npt.NDArray[Any] = (h - mu) / np.sqrt(var + LN_EPS) * g + b
    return out


def numpy_forward(weights: Mapping[str, Any], x: npt.ArrayLike, head: str = "actor") -> F32:
    """Reference forward of one head: ``x`` (N, N_OBS) -> (N, 3) actor logits or (N, 1) critic value.

    Computed in float64 and returned as float32 (the parity tests' reference)."""
    h = np.asarray(x, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != INPUT_DIM:
        raise ValueError(f"x must have shape (N, {INPUT_DIM}), got {h.shape}")

    def p(name: str) -> npt.NDArray[np.float64]:
        return np.asarray(weights[f"{head}.{name}"], dtype=np.float64)

    h = np.tanh(_layer_norm(h @ p("fc1.weight").T + p("fc1.bias"), p("ln1.weight"), p("ln1.bias")))
    h = np.tanh(_layer_norm(h @ p("fc2.weight").T + p("fc2.bias"), p("ln2.weight"), p("ln2.bias")))
    logits: F32 = (h @ p("out.weight").T + p("out.bias")).astype(np.float32)
    return logits


def fast_forward(weights: Mapping[str, Any], x: npt.ArrayLike, head: str = "actor") -> F32:
    """The same forward in float32 (for rollouts and serving; agrees with the reference to ~1e-5)."""
    h = np.asarray(x, dtype=np.float32)
    for fc, ln in (("fc1", "ln1"), ("fc2", "ln2")):
        h = h @ weights[f"{head}.{fc}.weight"].T + weights[f"{head}.{fc}.bias"]
        mu = h.mean(axis=-1, keepdims=True)
        h = h - mu
        var = (h * h).mean(axis=-1, keepdims=True)
        h = np.tanh(
            h / np.sqrt(var + np.float32(LN_EPS)) * weights[f"{head}.{ln}.weight"] + weights[f"{head}.{ln}.bias"]
        )
    out: F32 = (h @ weights[f"{head}.out.weight"].T + weights[f"{head}.out.bias"]).astype(np.float32)
    return out


def softmax(logits: npt.ArrayLike) -> F32:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: F32 = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


def greedy(weights: Mapping[str, Any], x: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Greedy (argmax) actions of the actor for observations ``x`` (N, N_OBS)."""
    return np.asarray(fast_forward(weights, x).argmax(axis=1), dtype=np.int64)


def meta_features() -> dict[str, Any]:
    """The feature block of meta.json: feature set name, the N_OBS input names in order, the actions and the state
    schema the model was trained on (``state_schema``: a model of another schema is stale, common.artefact)."""
    return {"feature_set": FEATURE_SET, "features": list(OBSERVATION_FEATURES), "actions": list(ACTIONS),
            "state_schema": STATE_VERSION}  # fmt: skip
