"""``fusion sync``: pull new archive objects from the store (S3) into a local cache directory.

Guarantees:
* incremental: an object is downloaded only when it is missing locally or its remote etag changed
  (a manifest ``.sync-manifest.json`` records the etag of every synced object; S3 single-part etags
  are the MD5 of the bytes, so a cache without a manifest is verified by hashing instead);
* resumable: each object is written to a temp file, fsynced and renamed (LocalStore.put), and the
  manifest is rewritten atomically every few objects: an interrupted sync restarts where it stopped
  and never leaves a partial object under a real key;
* a failed download is reported and retried on the next run; it never aborts the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from archiver_svc.origins import IMPORTED_PREFIX
from archiver_svc.windows import PREFIXES
from common.log import kv
from common.store import LocalStore, ObjectInfo, ObjectStore

log = logging.getLogger("archiver.sync")
MANIFEST = ".sync-manifest.json"


@dataclass(slots=True)
class SyncResult:
    listed: int = 0
    downloaded: int = 0
    skipped: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)


def _load_manifest(path: Path) -> dict[str, str]:
    try:
        d = json.loads(path.read_text())
        return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_manifest(path: Path, m: dict[str, str]) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(m, sort_keys=True))
    os.replace(tmp, path)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _up_to_date(local: LocalStore, info: ObjectInfo, manifest: dict[str, str]) -> bool:
    p = local.root / info.key
    try:
        if p.stat().st_size != info.size:
            return False
    except FileNotFoundError:
        return False
    return manifest.get(info.key) == info.etag or _md5(p) == info.etag


def sync(
    store: ObjectStore,
    cache_dir: str | os.PathLike[str],
    prefixes: Iterable[str] | None = None,
    *,
    progress: bool = True,
    workers: int = 4,
) -> SyncResult:
    """Download missing/changed objects under ``prefixes`` (default: every archive prefix, recorded and
    imported)."""
    local = LocalStore(cache_dir)
    mpath = local.root / MANIFEST
    manifest = _load_manifest(mpath)
    every = [o + p + "/" for o in ("", IMPORTED_PREFIX) for p in PREFIXES.values()]
    pfx = list(prefixes) if prefixes is not None else every
    infos = [o for p in pfx for o in store.list(p)]
    res = SyncResult(listed=len(infos))
    todo = [o for o in infos if not _up_to_date(local, o, manifest)]
    res.skipped = len(infos) - len(todo)
    pending = {o.key for o in todo}
    for o in infos:  # objects verified by hash: remember their etag
        if o.key not in pending:
            manifest.setdefault(o.key, o.etag)

    def fetch(o: ObjectInfo) -> tuple[ObjectInfo, Exception | None]:
        try:
            local.put(o.key, store.get(o.key))
            return o, None
        except Exception as e:  # reported, retried next run
            return o, e

    bar = None
    if progress and todo:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        bar.start()
        task = bar.add_task(f"sync {len(todo)} objects", total=sum(o.size for o in todo))
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for i, (o, err) in enumerate(pool.map(fetch, todo), 1):
                if err is None:
                    res.downloaded += 1
                    res.bytes += o.size
                    manifest[o.key] = o.etag
                else:
                    res.failed.append(f"{o.key}: {err!r}")
                    kv(log, logging.WARNING, "download failed", obj=o.key, error=repr(err))
                if bar is not None:
                    bar.update(task, advance=o.size)
                if i % 50 == 0:
                    _save_manifest(mpath, manifest)
    finally:
        _save_manifest(mpath, manifest)
        if bar is not None:
            bar.stop()
    return res
