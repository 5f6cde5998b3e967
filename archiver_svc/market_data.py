"""What :func:`archiver_svc.reader.load_market` returns: one market's states, labels and the problems met.

Its own module so :mod:`archiver_svc.origins` (merging recorded and imported data) and the reader both use it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.schema import LabelColumns, StateColumns


@dataclass(slots=True)
class MarketData:
    market: str
    states: StateColumns
    labels: LabelColumns | None
    problems: list[str] = field(default_factory=list)
    skipped: int = 0  # objects or entries skipped for problems reported (and quarantined) by an earlier load
