"""Read every signal of a pool into `SignalReading`s (the policy's input)."""

from __future__ import annotations

from fleet.config import PoolConfig, SignalConfig
from fleet.model import SignalReading
from fleet.signals import SourceReading, read_source


def signal_name(index: int, signal: SignalConfig) -> str:
    return signal.name or f"{signal.kind}[{index}]"


def _combine(first: SourceReading, second: SourceReading) -> SourceReading:
    """Waiting + in-flight from two sources: missing when either is."""
    source = f"{first.source} + {second.source}"
    if first.value is None or second.value is None:
        errors = "; ".join(r.error for r in (first, second) if r.error)
        return SourceReading.missing(source, errors or "a part is missing")
    ages = [a for a in (first.age_s, second.age_s) if a is not None]
    return SourceReading(first.value + second.value, source, max(ages) if ages else None)


def read_signal(index: int, signal: SignalConfig) -> SignalReading:
    reading = read_source(signal.source)
    extra = getattr(signal, "in_flight_source", None)
    if extra is not None:
        reading = _combine(reading, read_source(extra))
    return SignalReading(
        name=signal_name(index, signal),
        kind=signal.kind,
        value=reading.value,
        source=reading.source,
        age_s=reading.age_s,
        error=reading.error,
    )


def read_pool_signals(pool: PoolConfig) -> tuple[SignalReading, ...]:
    return tuple(read_signal(i, s) for i, s in enumerate(pool.signals))
