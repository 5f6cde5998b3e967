"""HTTP GETs for ``fusion backfill``: rate-limited, retried, and cached on disk so a rerun resumes.

Guarantees: at most ``rate_per_s`` requests a second leave this process; a transport error, 429 or 5xx is
retried with exponential backoff and full jitter (a 429's ``Retry-After`` is honoured, up to 60 s), then
raises :class:`FetchError`; a 404 is ``None`` (not there); a response the caller accepts as final is kept in
``cache_dir`` (written atomically), so a second run asks the network only for what the first did not get.
URLs are logged without credentials (``common.log.redact``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from common.log import redact


class FetchError(RuntimeError):
    """A request that kept failing after its retries."""


class _Retryable(Exception):
    def __init__(self, why: str, after_s: float = 0.0) -> None:
        super().__init__(why)
        self.after_s = after_s


class Fetcher:
    def __init__(self, cache_dir: Path, rate_per_s: float = 5.0, attempts: int = 5, timeout_s: float = 30.0,
                 backoff_max_s: float = 8.0) -> None:  # fmt: skip
        self.cache_dir, self.min_gap_s = cache_dir, 1.0 / max(rate_per_s, 1e-3)
        self.attempts, self.backoff_max_s = attempts, backoff_max_s
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=True)
        self.network_requests = 0
        self.cache_hits = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def _path(self, url: str, params: dict[str, str] | None) -> Path:
        key = url + "?" + "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
        h = hashlib.sha256(key.encode()).hexdigest()
        return self.cache_dir / h[:2] / h

    def _throttle(self) -> None:
        with self._lock:
            wait = self._last + self.min_gap_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()

    def _once(self, url: str, params: dict[str, str] | None) -> bytes | None:
        self._throttle()
        self.network_requests += 1
        try:
            r = self.http.get(url, params=params)
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}") from e
        if r.status_code == 404:
            return None
        if r.status_code == 429 or r.status_code >= 500:
            try:
                after = min(float(r.headers.get("retry-after", "0")), 60.0)
            except ValueError:
                after = 0.0
            raise _Retryable(f"HTTP {r.status_code}", after)
        if r.status_code >= 400:
            raise FetchError(f"{redact(url)}: HTTP {r.status_code}")
        return r.content

    def get(self, url: str, params: dict[str, str] | None = None,
            final: Callable[[bytes], bool] = lambda b: True) -> bytes | None:  # fmt: skip
        """The body of ``GET url?params`` (None for 404), from the cache when a final answer is there."""
        path = self._path(url, params)
        if path.exists():
            self.cache_hits += 1
            return path.read_bytes()
        retry = Retrying(stop=stop_after_attempt(self.attempts), reraise=True,
                         wait=wait_random_exponential(multiplier=0.2, max=self.backoff_max_s),
                         retry=retry_if_exception_type(_Retryable))  # fmt: skip
        try:
            for attempt in retry:
                with attempt:
                    try:
                        body = self._once(url, params)
                    except _Retryable as e:
                        if e.after_s:
                            time.sleep(e.after_s)
                        raise
        except _Retryable as e:
            raise FetchError(f"{redact(url)}: {e} after {self.attempts} attempts") from e
        if body is not None and final(body):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(body)
            tmp.replace(path)
        return body
