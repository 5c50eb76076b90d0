"""What every signal source returns.  A source never raises: a failure is a
missing reading with the reason, and a missing reading is never zero."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceReading:
    value: float | None
    source: str  # human description, e.g. "redis list jobs@127.0.0.1:6379/0"; never a secret
    age_s: float | None = None  # how old the sample is, when the source knows
    error: str | None = None

    @classmethod
    def missing(cls, source: str, error: str) -> SourceReading:
        return cls(value=None, source=source, error=error)
