"""The object store: one interface, a local directory (embedded default) and S3 (boto3).

Keys are ``/``-separated paths (``market-data/BTC-15M/2026-11-23/1763856000000.msgpack.gz``);
both backends accept the same keys, so a local store can be synced to S3 and back.

Guarantees:
* :meth:`ObjectStore.put` is atomic: a reader sees the old object, the new one, or none; never
  a partial one (local: write to a temp file, fsync, rename; S3: a single PutObject).
* :meth:`ObjectStore.put_if_absent` creates the object only if the key does not exist
  (local: ``link``; S3: ``If-None-Match: *``) and returns False when it already existed.
* Credentials for S3 come from the standard AWS chain (environment, config files, roles),
  never from code; they are never logged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class StoreError(RuntimeError):
    """A store operation that failed for a reason other than a missing key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(ABC):
    """A flat key -> bytes store."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (overwrites)."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent; True when created, False when it already existed."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises KeyError when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def list_folders(self, prefix: str) -> tuple[str, ...]:
        """Sorted names of the "folders" right below ``prefix`` (which ends with ``/``): the first path part of
        every key under it. This default lists every key; the backends list only the folders."""
        out = {o.key[len(prefix) :].split("/", 1)[0] for o in self.list(prefix) if "/" in o.key[len(prefix) :]}
        return tuple(sorted(out))

    def get_text(self, key: str) -> str:
        return self.get(key).decode()


class InvalidKey(StoreError, ValueError):
    """A key that could leave the store's prefix or alias another key; refused before any IO."""


def check_key(key: str) -> str:
    """``key`` when it is a plain relative path inside the store; raises :class:`InvalidKey` otherwise.

    Refused: empty keys or segments (``a//b``, trailing ``/``), ``.`` and ``..`` segments, absolute
    paths, backslashes, control characters (newlines, NUL) and keys over 1,024 bytes. So no key can
    leave the store's directory or prefix, and two different keys never name the same object."""
    if not isinstance(key, str) or not key or len(key.encode()) > 1024:
        raise InvalidKey(f"invalid key {str(key)[:80]!r}: empty or longer than 1024 bytes")
    if key.startswith("/") or "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey(f"invalid key {key[:80]!r}: absolute, backslash or control character")
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        raise InvalidKey(f"invalid key {key[:80]!r}: empty, '.' or '..' segment")
    return key


class LocalStore(ObjectStore):
    """A directory; keys map to relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        if not path.resolve().is_relative_to(self.root):  # a symlink inside the store pointing out
            raise InvalidKey(f"invalid key {key[:80]!r}: resolves outside the store")
        return path

    def _write_tmp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def _fsync_dir(self, d: Path) -> None:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        os.replace(tmp, path)
        self._fsync_dir(path.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
        finally:
            os.unlink(tmp)
        if created:
            self._fsync_dir(path.parent)
        return created

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root
        # walk only the deepest directory named by the prefix
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / check_key(head) if head else base
        if not start.exists():
            return
        keys: list[tuple[str, int, float]] = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                p = Path(dirpath) / name
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix):
                    st = p.stat()
                    keys.append((key, st.st_size, st.st_mtime))
        for key, size, mtime in sorted(keys):
            yield ObjectInfo(key=key, size=size, etag=f"{size}-{int(mtime * 1e6)}")

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list_folders(self, prefix: str) -> tuple[str, ...]:
        start = self.root / check_key(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            return tuple(sorted(e.name for e in os.scandir(start) if e.is_dir() and not e.name.startswith(".tmp-")))
        except (FileNotFoundError, NotADirectoryError):
            return ()


class S3Store(ObjectStore):
    """An S3 bucket (AWS, MinIO or any S3-compatible endpoint) under an optional prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (412, 409):
                return False
            raise StoreError(f"put_if_absent {key}: {code}") from e

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
            return body
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise StoreError(f"get {key}: {e.response.get('Error', {}).get('Code')}") from e

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise StoreError(f"head {key}") from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        n = len(self.prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(key=obj["Key"][n:], size=int(obj["Size"]), etag=str(obj["ETag"]).strip('"'))

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def list_folders(self, prefix: str) -> tuple[str, ...]:
        paginator = self._client.get_paginator("list_objects_v2")
        full = self.prefix + prefix
        out: set[str] = set()
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
            out.update(str(c["Prefix"])[len(full) :].rstrip("/") for c in page.get("CommonPrefixes", []))
        return tuple(sorted(out))

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._client.create_bucket(Bucket=self.bucket)


def open_store(url: str, endpoint_url: str | None = None, region: str | None = None) -> ObjectStore:
    """``file://DIR`` (or a plain path) -> LocalStore; ``s3://BUCKET/PREFIX`` -> S3Store."""
    u = urlparse(url)
    if u.scheme in ("", "file"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return LocalStore(path)
    if u.scheme == "s3":
        return S3Store(u.netloc, u.path.lstrip("/"), endpoint_url=endpoint_url, region=region)
    raise StoreError(f"unsupported store url {url!r}")
