"""Loading a model version from the registry for serving, with every check a bad file can fail.

Guarantees: :func:`load_version` returns a ready :class:`LoadedModel` or raises
:class:`ModelRejected` whose ``kind`` names the failed check and ``reason`` says why:

* ``pointer``      ``champion.json`` is unreadable (not JSON, not a pointer): :func:`load_champion` only;
* ``size``         the weights file is larger than ``max_bytes`` (by the store's object size or meta's
                   ``size_bytes``, checked *before* the bytes are read), or meta.json above ``MAX_META_BYTES``;
* ``missing``      meta.json or the weights file is absent, or meta.json is not JSON;
* ``sha256``       the weights' sha256 differs from meta.json's or from the one the event announced;
* ``features``     meta's ``feature_set`` / ``features`` (names *and order*) / ``actions`` differ from
                   :mod:`common.features` (the trader would feed the network the wrong inputs);
* ``architecture`` meta's architecture is not ``mlp-ln-tanh`` with this input width / action count;
* ``format``       the file is not safetensors;
* ``shape``        weight names, shapes or dtype do not match the architecture;
* ``non-finite``   a weight is NaN or inf.

Nothing here touches the trader's current model: a rejection leaves it in place (the caller swaps
only on success). Layout and champion pointer are the registry's (:mod:`trainer_svc.registry`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from safetensors.numpy import load as st_load

from common.features import FEATURE_SET, OBSERVATION_FEATURES
from common.policy import ARCH_TYPE, INPUT_DIM, LN_EPS, N_ACTIONS, WeightsError
from common.schema import ACTIONS
from common.store import ObjectStore
from trader_svc.policy_torch import TorchPolicy
from trainer_svc.registry import ChampionError, champion, model_prefix

MAX_MODEL_BYTES = 64 << 20  # default of ``FUSION_MAX_MODEL_BYTES``
MAX_META_BYTES = 1 << 20


class ModelRejected(ValueError):
    """A model the trader refuses to serve; ``kind`` is the failed check, ``reason`` the detail."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = f"{kind}: {reason}"


@dataclass(slots=True)
class LoadedModel:
    """A verified model ready to serve (immutable once built; swapped by reference)."""

    policy: str
    version: str
    sha256: str
    meta: dict[str, Any]
    net: TorchPolicy
    timings_s: dict[str, float] = field(default_factory=dict)  # download, verify, build


def check_meta(meta: dict[str, Any]) -> int:
    """Raise :class:`ModelRejected` unless meta's features and architecture are the trader's.
    Returns the hidden width."""
    if meta.get("feature_set") != FEATURE_SET:
        raise ModelRejected("features", f"feature_set {meta.get('feature_set')!r} != {FEATURE_SET!r}")
    feats = meta.get("features")
    if feats != list(OBSERVATION_FEATURES):
        if isinstance(feats, list) and sorted(map(str, feats)) == sorted(OBSERVATION_FEATURES):
            raise ModelRejected("features", "feature order differs from common.features.OBSERVATION_FEATURES")
        raise ModelRejected("features", f"features {feats!r} != {list(OBSERVATION_FEATURES)!r}")
    if "actions" in meta and meta["actions"] != list(ACTIONS):
        raise ModelRejected("features", f"actions {meta['actions']!r} != {list(ACTIONS)!r}")
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise ModelRejected("architecture", "meta.json has no architecture block")
    if arch.get("type") != ARCH_TYPE:
        raise ModelRejected("architecture", f"type {arch.get('type')!r} != {ARCH_TYPE!r}")
    if arch.get("input_dim") != INPUT_DIM or arch.get("n_actions") != N_ACTIONS:
        got = f"{arch.get('input_dim')}/{arch.get('n_actions')}"
        raise ModelRejected("architecture", f"input_dim/n_actions {got} != {INPUT_DIM}/{N_ACTIONS}")
    eps = arch.get("ln_eps", LN_EPS)
    if not isinstance(eps, int | float) or not math.isclose(float(eps), LN_EPS, rel_tol=1e-9):
        raise ModelRejected("architecture", f"ln_eps {eps!r} != {LN_EPS}")
    hidden = arch.get("hidden")
    if not isinstance(hidden, int) or not 1 <= hidden <= 4096:
        raise ModelRejected("architecture", f"hidden {hidden!r} is not a positive int")
    return hidden


def _classify(err: WeightsError) -> ModelRejected:
    msg = str(err)
    return ModelRejected("non-finite" if "non-finite" in msg else "shape", msg)


def load_version(
    store: ObjectStore,
    policy: str,
    version: str,
    expect_sha256: str | None = None,
    uri: str | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
) -> LoadedModel:
    """Download, verify and build ``policy/version`` (see the module docstring for the checks)."""
    t0 = time.perf_counter()
    try:
        prefix = model_prefix(policy, version)
    except ValueError as e:
        raise ModelRejected("missing", str(e)) from e
    wkey = prefix + "model.safetensors"
    if uri is not None and not uri.endswith(wkey):
        raise ModelRejected("missing", f"uri {uri!r} does not name {wkey!r}")
    try:
        sizes = {i.key: i.size for i in store.list(prefix)}  # object sizes, no bytes read
        _check_size("model.safetensors", sizes.get(wkey, 0), max_bytes, "in the store")
        _check_size("meta.json", sizes.get(prefix + "meta.json", 0), MAX_META_BYTES, "in the store")
        meta = json.loads(store.get(prefix + "meta.json"))
        if isinstance(meta, dict) and isinstance(meta.get("size_bytes"), int):
            _check_size("model.safetensors", meta["size_bytes"], max_bytes, "declared by meta.json")
        data = store.get(wkey)
        _check_size("model.safetensors", len(data), max_bytes, "read")  # replaced since it was listed
    except ModelRejected:
        raise
    except KeyError as e:
        raise ModelRejected("missing", f"{e.args[0]} not in the store") from None
    except ValueError as e:
        raise ModelRejected("missing", f"meta.json is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelRejected("missing", "meta.json is not an object")
    t1 = time.perf_counter()
    sha = hashlib.sha256(data).hexdigest()
    if meta.get("sha256") != sha:
        raise ModelRejected("sha256", f"file {sha[:12]}... != meta.json {str(meta.get('sha256'))[:12]}...")
    if expect_sha256 is not None and expect_sha256 != sha:
        raise ModelRejected("sha256", f"file {sha[:12]}... != announced {expect_sha256[:12]}...")
    hidden = check_meta(meta)
    try:
        weights = st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelRejected("format", f"not a safetensors file: {e}") from e
    t2 = time.perf_counter()
    try:
        net = TorchPolicy(weights, hidden=hidden)
    except WeightsError as e:
        raise _classify(e) from e
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelRejected("shape", f"{type(e).__name__}: {e}") from e
    t3 = time.perf_counter()
    timings = {"download_s": t1 - t0, "verify_s": t2 - t1, "build_s": t3 - t2, "total_s": t3 - t0}
    return LoadedModel(policy, version, sha, meta, net, timings)


def _check_size(name: str, size: int, limit: int, how: str) -> None:
    if size > limit:
        raise ModelRejected("size", f"{name} is {size} bytes ({how}) > limit {limit} (FUSION_MAX_MODEL_BYTES)")


def load_champion(store: ObjectStore, policy: str, max_bytes: int = MAX_MODEL_BYTES) -> LoadedModel | None:
    """The current champion of ``policy`` (verified against its pointer's sha256), None when there is none.
    Raises :class:`ModelRejected` when the champion itself fails verification (kind ``pointer`` when
    ``champion.json`` cannot be read)."""
    try:
        ptr = champion(store, policy)
    except ChampionError as e:
        raise ModelRejected("pointer", str(e)) from e
    if ptr is None:
        return None
    return load_version(store, policy, str(ptr["version"]), expect_sha256=ptr.get("sha256"), max_bytes=max_bytes)
