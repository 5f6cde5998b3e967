"""The store's figures for the UI (archive calendar, model registry), with cached listings.

Guarantees:

* A listing of a prefix is reused for ``ttl_s`` (one ``list`` per prefix per ``ttl_s``, whatever the number of
  refreshes or markets); a version's ``meta.json`` is immutable and read once; champion pointers and histories are
  re-read with the listing. So a refresh costs the store at most ``3 + policies x (2 + new versions)`` calls and
  usually none.
* Bad objects (unreadable JSON, foreign keys) are skipped, never raised.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

from archiver_svc.windows import PREFIXES, parse_key, utc_date
from common.names import is_valid_name
from common.store import ObjectStore

DAY_MS = 86_400_000


class CachedStore:
    """``list`` results reused for ``ttl_s``; immutable objects read once."""

    def __init__(self, store: ObjectStore, ttl_s: float = 30.0) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._lists: dict[str, tuple[float, list[tuple[str, int]]]] = {}
        self._gets: dict[str, tuple[float, bytes | None]] = {}
        self._immutable: dict[str, bytes | None] = {}
        self._lock = threading.Lock()

    def list(self, prefix: str) -> list[tuple[str, int]]:
        with self._lock:
            hit = self._lists.get(prefix)
            if hit and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
        items = [(i.key, i.size) for i in self.store.list(prefix)]
        with self._lock:
            self._lists[prefix] = (time.monotonic(), items)
        return items

    def get(self, key: str, immutable: bool = False) -> bytes | None:
        with self._lock:
            if immutable and key in self._immutable:
                return self._immutable[key]
            hit = self._gets.get(key)
            if not immutable and hit and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
        try:
            data: bytes | None = self.store.get(key)
        except KeyError:
            data = None
        with self._lock:
            if immutable:
                if len(self._immutable) > 5000:
                    self._immutable.clear()
                self._immutable[key] = data
            else:
                self._gets[key] = (time.monotonic(), data)
        return data

    def invalidate(self) -> None:
        """Forget listings and pointers (after an action changed the store)."""
        with self._lock:
            self._lists.clear()
            self._gets.clear()


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def archive_calendar(cs: CachedStore, window_s: int, dead: list[dict[str, Any]]) -> dict[str, Any]:
    """Per market and UTC day: objects (states, labels), coverage of the day, quarantined objects, dead letters,
    and which kinds ``fusion compact`` has turned into Parquet (a manifest listed) with their bytes."""
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {
            "states": 0,
            "labels": 0,
            "bytes": 0,
            "quarantined": 0,
            "dead_letters": 0,
            "compacted": [],
            "columnar_bytes": 0,
        }  # fmt: skip
    )
    for _kind, prefix in PREFIXES.items():
        for key, size in cs.list(prefix + "/"):
            p = parse_key(key)
            if p is None:
                continue
            k, market, ws = p
            c = cells[(market, utc_date(ws))]
            c[k] += 1
            c["bytes"] += size
    for key, size in cs.list("columnar/"):  # columnar/{states|labels}/{market}/[_manifests/]{day}.*
        parts = key.split("/")
        if len(parts) < 4 or parts[1] not in ("states", "labels") or not is_valid_name(parts[2]):
            continue
        name = parts[-1]
        if len(parts) == 5 and parts[3] == "_manifests" and name.endswith(".manifest.json"):
            c = cells[(parts[2], name[:10])]
            c["compacted"] = sorted({*c["compacted"], parts[1]})
        elif len(parts) == 4 and name.endswith(".parquet"):
            cells[(parts[2], name[:10])]["columnar_bytes"] += size
    for key, _ in cs.list("quarantine/"):
        if key.endswith(".json"):
            continue
        parts = key.split("/")
        if len(parts) >= 4 and parts[1] in PREFIXES.values() and is_valid_name(parts[2]):
            cells[(parts[2], parts[3])]["quarantined"] += 1
    for x in dead:
        if x.get("market") and x.get("day"):
            cells[(x["market"], x["day"])]["dead_letters"] += 1
    per_day = DAY_MS // (window_s * 1000)
    markets = sorted({m for m, _ in cells})
    days = sorted({d for _, d in cells})
    out: dict[str, dict[str, Any]] = {m: {} for m in markets}
    for (m, day), c in cells.items():
        out[m][day] = {**c, "coverage": round(min(1.0, c["states"] / per_day), 4)}
    return {"markets": markets, "days": days, "cells": out, "windows_per_day": per_day}


def registry_view(cs: CachedStore, max_policies: int = 10, max_versions: int = 20) -> list[dict[str, Any]]:
    """Per policy: champion, champion history and the newest versions with hold-out figures vs the baselines."""
    by_policy: dict[str, set[str]] = defaultdict(set)
    for key, _ in cs.list("models/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == "meta.json" and is_valid_name(parts[1]) and is_valid_name(parts[2]):
            by_policy[parts[1]].add(parts[2])
    out = []
    for pol in sorted(by_policy)[:max_policies]:
        champ = _json(cs.get(f"models/{pol}/champion.json"))
        hist = _json(cs.get(f"models/{pol}/champion-history.json")) or []
        versions = []
        for v in sorted(by_policy[pol], reverse=True)[:max_versions]:
            meta = _json(cs.get(f"models/{pol}/{v}/meta.json", immutable=True)) or {}
            dec = meta.get("decision") or {}
            tr = meta.get("training") or {}
            versions.append({
                "version": v, "algorithm": meta.get("algorithm"), "backend": meta.get("backend"),
                "holdout": meta.get("holdout_metrics") or {}, "champion_metrics": meta.get("champion_metrics"),
                "baselines": meta.get("baselines_metrics") or {}, "promote": dec.get("promote"),
                "reason": dec.get("reason") or "", "history": tr.get("history") or [],
                "champion": bool(isinstance(champ, dict) and champ.get("version") == v),
            })  # fmt: skip
        out.append({"policy": pol, "champion": champ if isinstance(champ, dict) else None,
                    "history": hist if isinstance(hist, list) else [], "versions": versions})  # fmt: skip
    return out


def decision_words(v: dict[str, Any]) -> str:
    """The promotion decision as a sentence (the trainer's reason, which names the comparison that decided)."""
    if v.get("promote") is None:
        return "no decision recorded"
    verdict = "promoted" if v["promote"] else "not promoted"
    return f"{verdict}: {v.get('reason') or 'no reason given'}"


def day_of(ms: int) -> str:
    return utc_date(ms)
