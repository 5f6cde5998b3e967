"""Checks a training job passes BEFORE training, each failure naming the setting to change.

* the label horizon fits the data's tick: a label at horizon ``h`` needs a state within the label
  tolerance of ``t + h``, so ``h`` must be at least one tick and within the tolerance of a multiple of it
  (1-minute data with the default 30 s horizon has no valid label at all);
* every split has windows: train and validation at least one, the hold-out at least two (its bootstrap
  interval needs two), after the purge gap (the longest label horizon) between splits;
* the training split has valid labels at the horizon.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.features import infer_tick_s
from trainer_svc.dataset import Dataset, horizon_index

MIN_WINDOWS = {"train": 1, "val": 1, "holdout": 2}


class NotTrainable(ValueError):
    """The job cannot train on this data; the message says which setting to change."""


def not_trainable(e: ValueError) -> ValueError:
    """A split's "too few windows" error as :class:`NotTrainable` saying what to do; other errors unchanged."""
    if "windows" not in str(e):
        return e
    return NotTrainable(f"{e}: give the job more data (a wider --from/--to range, or import/record more)")


def check_horizon(tick_s: float, horizon_s: int, tolerance_ms: int) -> None:
    """Raise :class:`NotTrainable` unless a state exists within ``tolerance_ms`` of every ``t + horizon_s``."""
    tick_ms, h_ms = tick_s * 1000.0, float(horizon_s) * 1000.0
    fix = (
        f"set the training horizon to a multiple of the tick, e.g. --set horizon_s={int(np.ceil(tick_s))} "
        f"(and FUSION_LABEL_HORIZONS_S for the labeler)"
    )
    if h_ms + tolerance_ms < tick_ms:
        raise NotTrainable(
            f"label horizon {horizon_s} s is shorter than the data's tick ({tick_s:g} s): no state exists "
            f"{horizon_s} s after another, so no label is valid; {fix}"
        )
    off = abs(h_ms - round(h_ms / tick_ms) * tick_ms)
    if off > tolerance_ms:
        raise NotTrainable(
            f"label horizon {horizon_s} s is {off / 1000:g} s away from a multiple of the data's tick "
            f"({tick_s:g} s), beyond the label tolerance ({tolerance_ms} ms); {fix}, or raise "
            f"FUSION_LABEL_TOLERANCE_MS to at least {int(np.ceil(off))}"
        )


def check_trainable(ds: Dataset, horizon_s: int, tolerance_ms: int) -> dict[str, Any]:
    """Raise :class:`NotTrainable` (see the module doc); else return the figures checked."""
    tick_s = infer_tick_s(ds.states.tick_ms)
    check_horizon(tick_s, horizon_s, tolerance_ms)  # before the labels are asked for that horizon
    n_valid = None
    if ds.labels is not None:
        rows = ds.splits["train"].rows(ds.windows)
        n_valid = int(ds.labels.valid[rows, horizon_index(ds.labels, horizon_s)].astype(bool).sum())
    counts = {k: int(ds.splits[k].windows.size) for k in MIN_WINDOWS}
    return check_figures(tick_s, horizon_s, tolerance_ms, counts, len(ds.windows),
                         len(ds.dropped_windows), ds.purge_s, n_valid, int(ds.splits["train"].n_states))  # fmt: skip


def check_figures(
    tick_s: float,
    horizon_s: int,
    tolerance_ms: int,
    counts: dict[str, int],
    n_windows: int,
    n_dropped: int,
    purge_s: float,
    n_valid: int | None,
    n_train_states: int,
) -> dict[str, Any]:
    """:func:`check_trainable` on the figures alone (windows per split, valid training labels), so a job that
    never holds all its states (``trainer_svc.bounded``) is checked alike."""
    check_horizon(tick_s, horizon_s, tolerance_ms)
    short = [k for k, n in MIN_WINDOWS.items() if counts[k] < n]
    if short:
        need = sum(MIN_WINDOWS.values()) + n_dropped
        raise NotTrainable(
            f"too few windows: {n_windows} complete windows in the data (train {counts['train']}, "
            f"validation {counts['val']}, hold-out {counts['holdout']}, {n_dropped} dropped by the "
            f"{purge_s:g} s purge gap); the hold-out needs {MIN_WINDOWS['holdout']} and the others 1: give "
            f"the job more data (a wider --from/--to range, or import/record more; at least {need} windows, "
            f"a few hundred to learn anything) or lower the longest label horizon (FUSION_LABEL_HORIZONS_S), "
            f"which sets the purge gap"
        )
    figures: dict[str, Any] = {"tick_s": tick_s, "horizon_s": int(horizon_s), "windows": counts}
    if n_valid is not None:
        figures["valid_train_labels"] = n_valid
        if n_valid == 0:
            raise NotTrainable(
                f"no valid label at horizon {horizon_s} s in the {n_train_states} training states (every one is "
                f"stale, lacks a book or a future state within FUSION_LABEL_TOLERANCE_MS, or its window's outcome "
                f"is unknown): check the data's quality (fusion streams/import report) or change horizon_s"
            )
    return figures
