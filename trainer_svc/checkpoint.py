"""Training checkpoints in the store: weights + history after every epoch under
``checkpoints/{policy}/{run_key}/``; a retried job with the same key resumes from the last epoch (optimizer
moments restart from zero) and clears them when it finishes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from common import artefact
from common.store import ObjectStore


class Checkpointer:
    def __init__(self, store: ObjectStore, policy: str, run_key: str) -> None:
        self.store, self.prefix = store, f"checkpoints/{artefact.checked_name('policy', policy)}/{run_key}/"

    def save(self, epoch: int, weights: dict[str, np.ndarray], history: list[dict[str, Any]]) -> None:
        self.store.put(self.prefix + "weights.safetensors", bytes(st_save(dict(weights))))
        self.store.put(self.prefix + "state.json", json.dumps({"epoch": epoch, "history": history}).encode())

    def load(self) -> dict[str, Any] | None:
        try:
            st = json.loads(self.store.get(self.prefix + "state.json"))
            w = st_load(self.store.get(self.prefix + "weights.safetensors"))
        except KeyError:
            return None
        return {"epoch": int(st["epoch"]), "history": st["history"], "weights": w}

    def clear(self) -> None:
        for name in ("state.json", "weights.safetensors"):
            self.store.delete(self.prefix + name)
