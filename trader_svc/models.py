"""Loading a model version for serving: the artefact contract's checks (:func:`common.artefact.fetch_verified`),
then the torch policy built from the verified weights.

Guarantees: :func:`load_version` returns a ready :class:`LoadedModel` or raises
:class:`~common.artefact.ModelRejected` whose ``kind`` names the failed check and ``reason`` says why
(``pointer``, ``size``, ``missing``, ``sha256``, ``stale``, ``features``, ``architecture``, ``format``,
``shape``, ``non-finite``: see :mod:`common.artefact`).

Nothing here touches the trader's current model: a rejection leaves it in place (the caller swaps
only on success). Layout and champion pointer are the artefact contract's (:mod:`common.artefact`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from common.artefact import MAX_MODEL_BYTES, ChampionError, ModelRejected, champion, fetch_verified, rejected_weights
from common.policy import WeightsError
from common.store import ObjectStore
from trader_svc.policy_torch import TorchPolicy

__all__ = ["LoadedModel", "ModelRejected", "load_champion", "load_version"]


@dataclass(slots=True)
class LoadedModel:
    """A verified model ready to serve (immutable once built; swapped by reference)."""

    policy: str
    version: str
    sha256: str
    meta: dict[str, Any]
    net: TorchPolicy
    timings_s: dict[str, float] = field(default_factory=dict)  # download, verify, build
    source: str = ""  # what announced it: "start", "champion", "model-updated", "model-rolled-back"


def load_version(
    store: ObjectStore,
    policy: str,
    version: str,
    expect_sha256: str | None = None,
    uri: str | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
    max_age_h: float = 0.0,
) -> LoadedModel:
    """Download, verify (:func:`common.artefact.fetch_verified`; stale past ``max_age_h``) and build the model."""
    art = fetch_verified(store, policy, version, expect_sha256, uri, max_bytes, max_age_h)
    t2 = time.perf_counter()
    try:
        net = TorchPolicy(art.weights, hidden=art.hidden)
    except WeightsError as e:
        raise rejected_weights(e) from e
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelRejected("shape", f"{type(e).__name__}: {e}") from e
    t3 = time.perf_counter()
    timings = {**art.timings_s, "build_s": t3 - t2}
    timings["total_s"] = sum(timings.values())
    return LoadedModel(policy, version, art.sha256, art.meta, net, timings)


def load_champion(
    store: ObjectStore, policy: str, max_bytes: int = MAX_MODEL_BYTES, max_age_h: float = 0.0
) -> LoadedModel | None:
    """The current champion of ``policy`` (verified against its pointer's sha256), None when there is none.
    Raises :class:`ModelRejected` when the champion itself fails verification (kind ``pointer`` when
    ``champion.json`` cannot be read)."""
    try:
        ptr = champion(store, policy)
    except ChampionError as e:
        raise ModelRejected("pointer", str(e)) from e
    if ptr is None:
        return None
    return load_version(store, policy, str(ptr["version"]), ptr.get("sha256"), None, max_bytes, max_age_h)
