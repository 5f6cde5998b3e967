"""The batch labeller: the streaming service's labelling function over a whole archive."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.schema import LabelColumns, StateColumns
from common.settings import Settings
from labeler_svc.labels import label_columns, ready_mask


def label_archive(states: StateColumns, settings: Settings) -> LabelColumns:
    """Label every state of one market (sorted by tick, unique) with the service's settings.

    Row for row identical to what ``fusion label`` writes for the same states. The last states
    of an archive whose future lies beyond its end come out invalid; :func:`final_mask` says
    which rows the service would already have written.
    """
    return label_columns(
        states,
        settings.label_horizons_s,
        tolerance_ms=settings.label_tolerance_ms,
        fee_rate=settings.taker_fee_rate,
        fee_exponent=settings.taker_fee_exponent,
        settle_wait_ms=settings.label_settle_wait_s * 1000,
    )


def final_mask(states: StateColumns, settings: Settings) -> npt.NDArray[np.bool_]:
    """Rows whose label is final given the archive's newest state (false: future beyond the data)."""
    newest = int(states.tick_ms[-1]) if len(states) else 0
    return ready_mask(
        states,
        settings.label_horizons_s,
        newest_tick_ms=newest,
        settle_wait_ms=settings.label_settle_wait_s * 1000,
    )
