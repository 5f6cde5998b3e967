"""What one compaction pass reports (:func:`archiver_svc.compact.compact`; counted by
:mod:`archiver_svc.compactor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Result:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    open_days: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)  # days whose compaction raised (retried by the next pass)

    def merge(self, other: Result) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.open_days += other.open_days
        self.problems += other.problems
        self.rows += other.rows
        self.failed += other.failed

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "skipped": self.skipped, "open": self.open_days,
                "problems": self.problems[:50], "n_problems": len(self.problems), "rows": self.rows,
                "failed": self.failed,
                "seconds": round(self.seconds, 3)}  # fmt: skip
