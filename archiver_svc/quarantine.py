"""The quarantine: where an archive object that fails validation is kept, once, for a person to inspect.

Layout (same store, same keys under a prefix, content-addressed so that doing it twice changes nothing)::

    quarantine/{key}.{sha256[:16]}         the object's bytes, as they were
    quarantine/{key}.{sha256[:16]}.json    {"key", "reason", "sha256", "size", "entries": [[id, reason], ...],
                                            "moved": bool, "ts"}

Guarantees:
* **Once.** :func:`quarantine` writes the copy, then its JSON (the JSON marks a complete quarantine); a
  second call for the same bytes finds the JSON and writes nothing (returns ``new=False``), so a problem is
  reported once across runs and processes.
* **Move without loss.** :func:`move` quarantines, then deletes the original only while the key still holds
  those very bytes (an archiver that merged a newer object in the meantime keeps it). Objects are never
  resurrected: the archiver rewrites a window only from validated entries.
* Keys under ``quarantine/`` are never listed as archive objects (:func:`archiver_svc.windows.parse_key`).
"""

from __future__ import annotations

import hashlib
import json
import time

from archiver_svc.windows import QUARANTINE_PREFIX
from common.store import ObjectStore


def quarantine_key(key: str, data: bytes) -> str:
    """Where ``data`` (once stored under ``key``) is kept in quarantine."""
    return f"{QUARANTINE_PREFIX}{key}.{hashlib.sha256(data).hexdigest()[:16]}"


def is_quarantined(store: ObjectStore, key: str, data: bytes) -> bool:
    """True when these bytes of ``key`` were quarantined (and so reported) already."""
    return store.exists(quarantine_key(key, data) + ".json")


def quarantine(
    store: ObjectStore,
    key: str,
    data: bytes,
    reason: str,
    entries: list[tuple[str, str]] | None = None,
    moved: bool = False,
) -> tuple[str, bool]:
    """Keep a copy of ``data`` (the object at ``key``) with a JSON reason; ``entries``: the bad entries'
    ``(id, reason)`` when only some entries failed. Returns ``(quarantine key, new)``; ``new`` is False when
    these bytes were quarantined before (nothing written)."""
    qkey = quarantine_key(key, data)
    if store.exists(qkey + ".json"):
        return qkey, False
    store.put(qkey, data)
    info = {
        "key": key,
        "reason": reason[:500],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "entries": [[i, r[:200]] for i, r in (entries or [])[:1000]],
        "moved": moved,
        "ts": int(time.time() * 1000),
    }
    store.put(qkey + ".json", json.dumps(info, sort_keys=True).encode())
    return qkey, True


def move(store: ObjectStore, key: str, data: bytes, reason: str) -> tuple[str, bool]:
    """:func:`quarantine` the unusable object ``data`` of ``key``, then delete ``key`` if it still holds
    ``data``. Returns ``(quarantine key, new)``."""
    qkey, new = quarantine(store, key, data, reason, moved=True)
    try:
        still = store.get(key) == data
    except KeyError:
        still = False
    if still:
        store.delete(key)
    return qkey, new
