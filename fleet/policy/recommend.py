"""From one signal reading to a machine count (target tracking).

Each function answers "how many machines does this signal ask for", or None
when the signal has no opinion this tick (e.g. utilization with no ready
machine to measure).  A missing reading is handled by the caller: it can
never produce a number, least of all zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleet.config import (
    BacklogSecondsSignal,
    GpuUtilizationSignal,
    MemoryPressureSignal,
    PoolConfig,
    QueueDepthSignal,
    QueueWaitSignal,
    SignalConfig,
)
from fleet.model import Reason, SignalReading

# ceil() of a value that is an exact multiple but carries float noise (12/4 = 3.0000000000000004)
_EPS = 1e-9


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPS))


def recommend(signal: SignalConfig, reading: SignalReading, ready: int) -> int | None:
    """Machines one signal asks for.  Only pools without `latency_budget_s` call it, and the
    config requires their targets."""
    value = reading.value
    assert value is not None, "missing readings never reach recommend()"
    if isinstance(signal, QueueDepthSignal):
        assert signal.target_per_machine is not None, "the config requires it on a threshold pool"
        return _ceil(max(0.0, value) / signal.target_per_machine)
    if isinstance(signal, BacklogSecondsSignal):
        return _ceil(max(0.0, value) * signal.seconds_per_item / signal.drain_seconds)
    if isinstance(signal, GpuUtilizationSignal):
        if ready == 0:
            return None  # nothing ready to measure: no opinion (HPA ignores unready pods)
        assert signal.target is not None, "the config requires it on a threshold pool"
        return _ceil(ready * max(0.0, value) / signal.target)
    if isinstance(signal, MemoryPressureSignal):
        # Inference servers preallocate GPU memory (vLLM takes 90%), so low memory use
        # is no evidence of idle capacity: this signal only ever pushes up.
        if ready == 0 or value <= signal.target:
            return 0
        return max(ready + 1, _ceil(ready * value / signal.target))
    if isinstance(signal, QueueWaitSignal):
        return None  # feedback for latency pools (fleet/policy/latency.py): no machine count here
    raise TypeError(f"unknown signal kind {signal.kind!r}")


def describe(signal: SignalConfig) -> str:
    if isinstance(signal, QueueDepthSignal):
        return f"queue {{v:g}} / {signal.target_per_machine:g} per machine"
    if isinstance(signal, BacklogSecondsSignal):
        return f"backlog {{v:g}} items x {signal.seconds_per_item:g}s / drain {signal.drain_seconds:g}s"
    if isinstance(signal, GpuUtilizationSignal):
        return f"gpu utilization {{v:.2f}} vs target {signal.target:g}"
    if isinstance(signal, QueueWaitSignal):
        return "queue wait {v:g}s"
    return f"gpu memory {{v:.2f}} vs target {signal.target:g}"


def from_signals(pool: PoolConfig, readings: Sequence[SignalReading], ready: int,
                 current: int) -> tuple[int, bool, tuple[Reason, ...]]:
    """The highest recommendation of the signals, whether scaling down is allowed, and the reasons
    (one per signal that voted, then what is missing)."""
    if not pool.signals:
        return pool.min, True, ()
    votes: list[int] = []
    missing: list[str] = []
    reasons: list[Reason] = []
    for signal, reading in zip(pool.signals, readings, strict=False):
        if signal.kind == "queue_wait":
            continue  # feedback for latency pools, not a size (config refuses it elsewhere)
        if reading.missing:
            missing.append(f"{reading.name} ({reading.error or 'no value'})")
            continue
        vote = recommend(signal, reading, ready)
        if vote is None:
            missing.append(f"{reading.name} (no ready machine to measure)")
            continue
        votes.append(vote)
        reasons.append(Reason("signal", f"{reading.name}: {describe(signal).format(v=reading.value)} "
                                        f"-> {vote}"))
    if len(readings) < len(pool.signals):
        missing.append("signals not read")
    if missing:
        reasons.append(Reason("missing_signal", "missing signal, not scaling down: " + "; ".join(missing)))
    if not votes:
        return current, False, tuple(reasons)
    return max(votes), not missing, tuple(reasons)
