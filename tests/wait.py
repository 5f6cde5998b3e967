"""One way for tests to wait on a condition (never on a fixed sleep): poll until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "the condition", step: float = 0.1) -> None:
    """Return as soon as ``cond()`` is truthy; raise ``AssertionError("timed out waiting for WHAT")`` after
    ``timeout`` seconds (monotonic clock), polling every ``step`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)
