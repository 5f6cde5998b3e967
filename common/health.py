"""Health checks as pure functions: what Redis said -> findings (no IO here; :mod:`common.healthwatch` collects
and runs them, and turns findings into alert episodes).

Each finding has an alert ``kind``, a ``key`` (its episode: one alert while it lasts, see :mod:`common.episodes`),
a sentence and its figures. The kinds:

* ``consumer-lag`` (key ``stream/group``): a consumer group's oldest entry it has not read or not acknowledged
  is ``alert_lag_s`` or more behind the stream's top (entry-ID time), or it has ``alert_lag_entries`` unread;
* ``redis-memory`` (key ``redis``): used memory above ``alert_redis_memory_pct`` of ``maxmemory`` or above
  ``alert_redis_memory_bytes``;
* ``restart-loop`` (key ``service/instance``): ``alert_restart_count`` starts or more within
  ``alert_restart_window_s``;
* ``stream-stalled`` (key = market): the market's published tick (``fusion:{M}:published``) has not moved for
  ``alert_stall_s`` of wall time while the checker watched it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LAG, MEMORY, RESTARTS, STALLED = "consumer-lag", "redis-memory", "restart-loop", "stream-stalled"
KINDS = (LAG, MEMORY, RESTARTS, STALLED)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    key: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupLag:
    """One consumer group of one stream: ``behind_ms`` = top entry's ms - the ms of the oldest entry the group has
    not read or not acknowledged (0 when it has everything); ``unread`` = entries not delivered (None: unknown)."""

    stream: str
    group: str
    behind_ms: int
    unread: int | None
    pending: int


def check_lag(lags: Iterable[GroupLag], max_s: float, max_entries: int) -> list[Finding]:
    """Groups ``max_s`` or more behind, or with ``max_entries`` (> 0) or more unread."""
    out = []
    for g in lags:
        behind_s = g.behind_ms / 1000
        unread = g.unread or 0
        if behind_s >= max_s or (max_entries > 0 and unread >= max_entries):
            out.append(Finding(LAG, f"{g.stream}/{g.group}",
                               f"group {g.group} is {behind_s:.0f} s behind {g.stream} ({unread} unread, "
                               f"{g.pending} pending)",
                               {"stream": g.stream, "group": g.group, "behind_s": round(behind_s, 1),
                                "unread": g.unread, "pending": g.pending}))  # fmt: skip
    return out


def check_memory(info: Mapping[str, Any], max_pct: float, max_bytes: int) -> list[Finding]:
    """``info``: Redis ``INFO memory`` (``used_memory``, ``maxmemory``). Over a percentage of ``maxmemory`` (when
    Redis has one and ``max_pct`` > 0) or over ``max_bytes`` (> 0)."""
    used = int(info.get("used_memory") or 0)
    limit = int(info.get("maxmemory") or 0)
    pct = 100.0 * used / limit if limit else None
    over_pct = pct is not None and max_pct > 0 and pct >= max_pct
    over_bytes = max_bytes > 0 and used >= max_bytes
    if not (over_pct or over_bytes):
        return []
    what = f"{pct:.0f} % of maxmemory {limit:,} B" if over_pct and pct is not None else f"limit {max_bytes:,} B"
    return [Finding(MEMORY, "redis", f"Redis uses {used:,} B ({what})",
                    {"used_bytes": used, "maxmemory": limit, "pct": None if pct is None else round(pct, 1),
                     "threshold_pct": max_pct, "threshold_bytes": max_bytes})]  # fmt: skip


def check_restarts(starts: Mapping[str, Iterable[int]], now_ms: int, count: int, window_s: float) -> list[Finding]:
    """``starts``: ``service/instance`` -> start times (ms). ``count`` or more within ``window_s`` before ``now_ms``."""
    out = []
    lo = now_ms - window_s * 1000
    for who, times in sorted(starts.items()):
        recent = sorted(t for t in times if lo <= t <= now_ms)
        if len(recent) >= count:
            out.append(Finding(RESTARTS, who, f"{who} started {len(recent)} times in {window_s:.0f} s",
                               {"service": who.partition("/")[0], "instance": who.partition("/")[2],
                                "starts": len(recent), "window_s": window_s, "last_start_ms": recent[-1]}))  # fmt: skip
    return out


def check_stalled(unchanged_s: Mapping[str, tuple[int, float]], max_s: float) -> list[Finding]:
    """``unchanged_s``: market -> (published tick ms, wall seconds it has not moved). ``max_s`` or more."""
    return [
        Finding(
            STALLED,
            m,
            f"{m}: no new state published for {s:.0f} s (last tick {tick})",
            {"market": m, "last_tick_ms": tick, "stalled_s": round(s, 1)},
        )  # fmt: skip
        for m, (tick, s) in sorted(unchanged_s.items())
        if s >= max_s
    ]
