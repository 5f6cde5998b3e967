"""A trader's archived records (``trades/{trader}/{YYYY-MM-DD}/{window_start_ms}.msgpack.gz``), read with the
archive reader (:func:`archiver_svc.reader.iter_objects`).

Guarantees: records come back once each, in stream-ID order, with their entry IDs; an object that cannot be
used (corrupt, inconsistent) and records that are not a usable record of this trader
(:func:`common.validate.check_trade`) are skipped and named in ``problems``, never raised.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import msgpack

from archiver_svc.reader import iter_objects
from archiver_svc.windows import ArchiveError
from common.log import log_once
from common.names import check_name
from common.store import ObjectStore
from common.validate import check_trade

log = logging.getLogger("archiver")


@dataclass(slots=True)
class TradeRecords:
    ids: list[str] = field(default_factory=list)  # entry IDs ``<ms>-<seq>`` (Redis time of the commit)
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_trades(
    source: ObjectStore | str | os.PathLike[str], trader: str, start_ms: int | None = None, end_ms: int | None = None
) -> TradeRecords:
    """Every archived record of ``trader`` whose entry ID time is in ``[start_ms, end_ms)``, oldest first."""
    check_name(trader, "trader")
    out = TradeRecords()
    for key, obj in iter_objects(source, "trades", trader, start_ms, end_ms):
        if isinstance(obj, ArchiveError):
            out.problems.append(f"{key}: {obj}")
            log_once(log, f"trades-obj:{key}", "archived trade object unusable; skipped", obj=key, error=str(obj))
            continue
        for eid, payload in zip(obj.ids, obj.payloads, strict=True):
            ms = int(eid.partition("-")[0])
            if (start_ms is not None and ms < start_ms) or (end_ms is not None and ms >= end_ms):
                continue
            why = check_trade(trader, payload)
            if why:
                out.problems.append(f"{key} {eid}: {why}")
                continue
            out.ids.append(eid)
            out.records.append(msgpack.unpackb(payload, raw=False))
    return out
