"""The error both venues' wire parsers raise for a malformed frame."""

from __future__ import annotations


class WireError(ValueError):
    """A frame that is not a valid venue message; ``reason`` is a short code (a metrics label),
    ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
