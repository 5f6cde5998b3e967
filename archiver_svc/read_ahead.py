"""The archiver's read-ahead: the next XREADGROUP runs on its own thread while this batch is validated and buffered.

:class:`ReadAhead` holds at most one read in flight. :meth:`~ReadAhead.take` hands its reply over (waiting for
it); :meth:`~ReadAhead.drop` forgets it and says whether it had delivered entries (they stay pending in the
consumer's own list and must be re-read from ID 0). The consumer never issues a read ahead before its group
cursor was noted, so the cursor never covers entries that are not buffered yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class ReadAhead:
    """See the module docstring."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="archive-reader")
        self._fut: Future[Any] | None = None

    @property
    def pending(self) -> bool:
        return self._fut is not None

    def submit(self, read: Callable[..., Any], *args: Any) -> None:
        self._fut = self._pool.submit(read, *args)

    def take(self) -> Any:
        """The reply of the read in flight (None when there is none)."""
        fut, self._fut = self._fut, None
        return None if fut is None else fut.result()

    def drop(self) -> bool:
        """Forget the read in flight; True when it delivered entries (re-read them from ID 0)."""
        fut, self._fut = self._fut, None
        if fut is None:
            return False
        with contextlib.suppress(Exception):
            return bool(fut.result(timeout=60))
        return False

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
