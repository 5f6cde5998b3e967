"""What the demo shows of the closed loop: the trader's record in the store, the live-vs-backtest check of the
swapped model and the alerts that were sent (see :mod:`fusion.demo.run` and :mod:`fusion.demo.report`).

Pure reads (Redis, the store, the alert receiver's file) that return JSON-able facts; a part that cannot be read
says why in its ``error`` instead of failing the report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from common import keys
from common.store import ObjectStore


def trade_record(r: Any, store: ObjectStore, trader: str) -> dict[str, Any]:
    """The trader's stream against its archive (exactly once: same entry IDs), records by type, the daily
    summaries written beside the archive (``trades/{trader}/{day}/summary.json``)."""
    import json

    from archiver_svc.summary import summary_key
    from archiver_svc.trades import load_trades

    out: dict[str, Any] = {"trader": trader}
    try:
        stream_ids = [e.decode() if isinstance(e, bytes) else str(e) for e, _ in r.xrange(keys.trades_stream(trader))]
        got = load_trades(store, trader)
        archived, in_stream = set(got.ids), set(stream_ids)
        parked = _parked_ids(r, keys.trades_stream(trader), [i for i in stream_ids if i not in archived])
        missing = [i for i in stream_ids if i not in archived and i not in parked]
        out.update(
            in_stream=len(stream_ids),
            archived=len(got.ids),
            duplicates=len(got.ids) - len(archived),
            parked=len(parked & in_stream),  # bad records: in the dead letters, never archived
            not_archived=len(missing),
            trimmed_after_archiving=len(archived - in_stream),
            exactly_once=len(got.ids) == len(archived) and not missing,
            by_type=dict(Counter(str(x.get("type")) for x in got.records)),
            problems=got.problems[:5],
        )
        days = sorted({_day(i) for i in got.ids})
        summaries: dict[str, Any] = {}
        for day in days:
            try:
                summaries[day] = json.loads(store.get(summary_key(trader, day)))
            except KeyError:
                summaries[day] = None
        out["summaries"] = summaries
        out["summary_keys"] = [summary_key(trader, d) for d in days]
    except Exception as e:  # the report is shorter, never absent
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def live_vs_backtest(r: Any, store: ObjectStore, policy: str, trader: str) -> dict[str, Any]:
    """The monitor's comparison of the serving model (:func:`trainer_svc.monitor_svc.comparison`) after one last
    cycle on the complete archive (run after the archiver's final flush: the windows that closed at the end are
    judged too). Alerts only: the demo never rolls back."""
    from trainer_svc.monitor_svc import comparison, from_settings

    try:
        from_settings(r, store, policy, trader, rollback=False).step()
        return comparison(r, policy, trader)
    except Exception as e:  # no champion, no archive: the report says why
        return {"error": f"{type(e).__name__}: {e}"}


def _parked_ids(r: Any, stream: str, ids: list[str]) -> set[str]:
    """Those of ``ids`` that a service parked in the dead letters (their once-marker, :mod:`common.deadletter`)."""
    pipe = r.pipeline(transaction=False)
    for i in ids:
        pipe.exists(keys.dead_letter_seen_key(stream, i))
    return {i for i, n in zip(ids, pipe.execute(), strict=True) if n}


def _day(entry_id: str) -> str:
    from archiver_svc.windows import utc_date

    return utc_date(int(entry_id.partition("-")[0]))


def sent_alerts(path: Path) -> list[dict[str, Any]]:
    """The alerts the demo's local receiver recorded, oldest first (kind, key, text, service, fields)."""
    from fusion.alert_receiver import read_alerts

    keep = ("kind", "key", "text", "service", "fields", "received_ms")
    return [{k: a[k] for k in keep if k in a} for a in read_alerts(path)]
