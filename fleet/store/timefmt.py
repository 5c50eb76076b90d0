"""Times in the database: UTC datetimes there, float seconds everywhere else."""

from __future__ import annotations

from datetime import UTC, datetime


def to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def to_ts(dt: datetime | None) -> float | None:
    return None if dt is None else ts_of(dt)


def ts_of(dt: datetime) -> float:
    """A non-null column's time in seconds."""
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
