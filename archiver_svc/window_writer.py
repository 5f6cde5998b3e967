"""Writing one window's object to the store: create it, or merge into the object already there.

:meth:`WindowWriter.write` runs on the archiver's writer threads. Guarantees: an object is only ever created
atomically (``put_if_absent``) or replaced by a superset of itself, under the window's merge lock
(:class:`archiver_svc.merge_lock.WindowLock`): the stored payload wins for an entry ID, so an entry is in the
archive exactly once. A stored object that cannot be decoded (or has another window length) is quarantined and
replaced by the new entries; stored entries the system cannot use (:func:`common.validate.check_payloads`) are
quarantined and never merged back. Window keys and bytes are deterministic (:mod:`archiver_svc.windows`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from archiver_svc.merge_lock import WindowLock
from archiver_svc.quarantine import quarantine
from archiver_svc.windows import ArchiveError, decode_object, encode_object, max_inflated_bytes, object_key
from common.log import log_once
from common.store import ObjectStore
from common.validate import check_payloads

log = logging.getLogger("archiver")


@dataclass(slots=True)
class Job:
    """One window's entries of one stream to store; ``result`` is set by the write."""

    stream: str
    market: str
    kind: str
    window_start_ms: int
    entries: dict[str, bytes]
    result: str = ""  # created | merged | unchanged


class WindowWriter:
    """See the module docstring."""

    def __init__(self, store: ObjectStore, lock: WindowLock, window_ms: int) -> None:
        self.store = store
        self.lock = lock
        self.window_ms = window_ms

    def write(self, job: Job) -> Job:
        """Store the window's object (create, or merge into the existing one)."""
        key = object_key(job.kind, job.market, job.window_start_ms)
        data = encode_object(job.kind, job.market, job.window_start_ms, self.window_ms, job.entries)
        if self.store.put_if_absent(key, data):
            job.result = "created"
            return job
        with self.lock.held(job.stream, job.window_start_ms):
            try:
                old_bytes: bytes | None = self.store.get(key)
            except KeyError:
                old_bytes = None
            if old_bytes == data:
                job.result = "unchanged"
                return job
            merged = job.entries
            if old_bytes is not None:
                merged = self._merge(job, key, old_bytes)
            new = encode_object(job.kind, job.market, job.window_start_ms, self.window_ms, merged)
            if new != old_bytes:
                self.store.put(key, new)
                job.result = "merged"
            else:
                job.result = "unchanged"
        return job

    def _merge(self, job: Job, key: str, old_bytes: bytes) -> dict[str, bytes]:
        """The job's entries united with the stored object's usable ones (the stored payload wins for an ID)."""
        try:
            old = decode_object(old_bytes, key, max_inflated_bytes(self.window_ms))
            if old.window_end_ms - old.window_start_ms != self.window_ms:
                raise ArchiveError(f"window length {old.window_end_ms - old.window_start_ms} != {self.window_ms}")
            kept = old.entries()
            bad = check_payloads(job.market, job.kind, old.ids, old.payloads)
            if bad:  # written before validation (or by hand): never merged back
                for i, _ in bad:
                    del kept[old.ids[i]]
                qkey, _ = quarantine(self.store, key, old_bytes, f"{len(bad)} unusable entries not merged",
                                     [(old.ids[i], why) for i, why in bad])  # fmt: skip
                log_once(log, f"badentries:{qkey}", "stored entries unusable; quarantined", obj=key, to=qkey,
                         entries=len(bad), reason=bad[0][1])  # fmt: skip
            return {**job.entries, **kept}
        except ArchiveError as e:
            qkey, _ = quarantine(self.store, key, old_bytes, str(e))
            log_once(log, f"corrupt:{key}", "stored object unusable; quarantined", obj=key, to=qkey, reason=str(e))
            return job.entries
