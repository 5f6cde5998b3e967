"""The checks a model's meta.json and weights pass before a model serves (:mod:`common.artefact` runs them; no IO).

* :func:`check_fresh`: not stale: trained on the state schema and feature set of the data now flowing, and, with a
  maximum age, created recently enough (kind ``stale``);
* :func:`check_meta`: the features, their order, the actions and the architecture are this code's (kinds
  ``features``, ``architecture``);
* :func:`rejected_weights`: a weight set that failed :func:`common.policy.check_weights` as ``shape`` / ``non-finite``.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Mapping
from typing import Any

from common.features import FEATURE_SET, OBSERVATION_FEATURES
from common.policy import ARCH_TYPE, INPUT_DIM, LN_EPS, N_ACTIONS, WeightsError
from common.schema import ACTIONS, STATE_VERSION


class ModelRejected(ValueError):
    """A model refused for serving (:func:`fetch_verified`); ``kind`` is the failed check, ``reason`` the detail.

    Kinds: ``pointer`` (champion.json unreadable), ``size``, ``missing``, ``sha256``, ``stale``, ``features``,
    ``architecture``, ``format`` (not safetensors), ``shape`` (names, shapes, dtype), ``non-finite``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = f"{kind}: {reason}"


def check_meta(meta: dict[str, Any]) -> int:
    """Raise :class:`ModelRejected` unless meta's features and architecture are :mod:`common.features`' and
    :mod:`common.policy`'s. Returns the hidden width."""
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


def check_fresh(meta: Mapping[str, Any], max_age_h: float = 0.0, now: float | None = None) -> None:
    """Raise :class:`ModelRejected` (kind ``stale``) when the model was trained on another state schema or feature
    set than the data now flowing (:data:`common.schema.STATE_VERSION`, :data:`common.features.FEATURE_SET`; only
    when meta records them: older metas name no schema) or, with ``max_age_h`` > 0, was created longer ago."""
    schema = meta.get("state_schema")
    if schema is not None and schema != STATE_VERSION:
        raise ModelRejected("stale", f"trained on state schema v{schema!r}, data flows v{STATE_VERSION}")
    fs = meta.get("feature_set")
    if fs is not None and fs != FEATURE_SET:
        raise ModelRejected("stale", f"trained on feature set {fs!r}, data flows {FEATURE_SET!r} (feature_set)")
    if max_age_h > 0:
        try:
            created = calendar.timegm(time.strptime(str(meta.get("created")), "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise ModelRejected("stale", f"no readable created time ({str(meta.get('created'))[:40]!r})") from None
        age_h = ((time.time() if now is None else now) - created) / 3600.0
        if age_h > max_age_h:
            raise ModelRejected("stale", f"created {meta.get('created')}, {age_h:.1f} h old > {max_age_h:g} h "
                                "(FUSION_MODEL_MAX_AGE_H)")  # fmt: skip


def rejected_weights(err: WeightsError) -> ModelRejected:
    """The :class:`ModelRejected` (``non-finite`` or ``shape``) of a weight set that failed ``check_weights``."""
    msg = str(err)
    return ModelRejected("non-finite" if "non-finite" in msg else "shape", msg)
