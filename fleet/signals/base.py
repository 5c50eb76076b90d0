"""What every signal source returns.  A source never raises: a failure is a
missing reading with the reason, and a missing reading is never zero."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Missing(StrEnum):
    """Why a reading is missing, as a code (`error` says it for people)."""

    UNREACHABLE = "unreachable"  # cannot connect to the server
    TIMEOUT = "timeout"  # no answer within the source's timeout
    ABSENT = "absent"  # the key, queue, series, file or group is not there
    MALFORMED = "malformed"  # an answer that is not one finite number where one was expected
    AUTH = "auth"  # credentials refused, or their environment variable unset
    STALE = "stale"  # a sample older than the source's max_age_s
    FAILED = "failed"  # anything else: an error status, a server error, a source bug


@dataclass(frozen=True)
class SourceReading:
    value: float | None
    source: str  # human description, e.g. "redis list jobs@127.0.0.1:6379/0"; never a secret
    age_s: float | None = None  # how old the sample is, when the source knows
    error: str | None = None
    code: Missing | None = None  # set exactly when the value is missing

    @classmethod
    def missing(cls, source: str, error: str, code: Missing = Missing.FAILED) -> SourceReading:
        return cls(value=None, source=source, error=error, code=code)


class ReadFailed(Exception):
    """Raised inside a source's read to end it with a missing reading (never leaves the source)."""

    def __init__(self, code: Missing, message: str) -> None:
        super().__init__(message)
        self.code = code
