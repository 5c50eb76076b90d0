"""The latency-aware policy: size a pool so work starts within `latency_budget_s`.

The user states the budget and `boot_seconds`; nothing else is tuned.  A machine
asked for now serves only after a boot, so the pool must already hold what demand
may rise to within one boot.  Per tick, in machines (`slots_per_machine` slots each):

  demand    x = queued + running work / slots (the `queue_depth` reading; from
            `gpu_utilization` when the queue is unread).  Queued work beyond what
            the ready slots clear within the budget is counted once, not per item.
  hold      the highest demand of the last `HOLD_BOOTS` boot times: capacity is
            released only after it has been unneeded for that long (ski rental, the
            rule the clairvoyant bound follows), so bursts do not pay boot after boot.
  headroom  the larger of a square-root staffing margin (BETA * sqrt(hold)) and the
            RISE_QUANTILE of how far demand rose within one boot time over the
            pool's recorded history (`PoolHistory.demand`), plus the current growth
            of the queue over the last boot time.

  desired = ceil(hold + headroom)

Pure: every input is an argument; `demand_sample` (x) is what the controller stores
with the decision and hands back as `PoolHistory.demand`.  `history_window_s(pool)`
says how much of that history the policy reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleet.config import PoolConfig
from fleet.model import PoolHistory, PoolView, Reason, SignalReading

HOLD_BOOTS = 1.0  # keep capacity this many boot times after it was last needed
BETA = 1.0  # square-root staffing margin, in sqrt(machines)
RISE_QUANTILE = 0.99  # of past rises within one boot time
HISTORY_BOOTS = 20.0  # history read: this many boot times (at least an hour)
_EPS = 1e-9


@dataclass(frozen=True)
class LatencyDecision:
    desired: int
    reasons: tuple[Reason, ...]
    demand_sample: float | None
    hold: float = 0.0
    headroom: float = 0.0


def history_window_s(pool: PoolConfig) -> float:
    """How far back `PoolHistory.demand` should reach for this pool."""
    return max(3600.0, HISTORY_BOOTS * pool.boot_seconds)


def _demand(pool: PoolConfig, view: PoolView, readings: Sequence[SignalReading]) -> float | None:
    """Work in the pool now, in machines; None when no reading says."""
    slots = pool.slots_per_machine
    queue = next((r.value for r in readings if r.kind == "queue_depth" and r.value is not None), None)
    if queue is not None:
        return max(0.0, queue) / slots
    util = next((r.value for r in readings if r.kind == "gpu_utilization" and r.value is not None), None)
    if util is not None:
        return max(0.0, util) * view.ready
    return None


def _rise_quantile(values: np.ndarray, steps: int) -> float:
    """The RISE_QUANTILE of max(x[i..i+steps]) - x[i] over the samples."""
    n = len(values)
    if n <= steps or steps < 1:
        return 0.0
    ahead = values[: n - steps].copy()
    base = values[: n - steps]
    for j in range(1, steps + 1):
        np.maximum(ahead, values[j: n - steps + j], out=ahead)
    rises = ahead - base
    return float(np.quantile(rises, RISE_QUANTILE))


def recommend(pool: PoolConfig, view: PoolView, readings: Sequence[SignalReading], history: PoolHistory,
              now: float) -> LatencyDecision:
    boot = pool.boot_seconds
    x = _demand(pool, view, readings)
    current = view.capacity
    if x is None:
        return LatencyDecision(current, (Reason("latency_no_signal", "no queue or utilization reading: "
                                                                      f"holding {current}"),), None)
    window = history_window_s(pool)
    past = [(t, v) for t, v in history.demand if now - window <= t < now]
    times = np.fromiter((t for t, _ in past), float, len(past))
    values = np.fromiter((v for _, v in past), float, len(past))
    # hold: the highest demand of the last HOLD_BOOTS boot times, now included
    recent = values[times >= now - HOLD_BOOTS * boot]
    hold = max(x, float(recent.max())) if len(recent) else x
    # headroom: how far demand rose within one boot (plus a tick) in the recorded history
    rise = 0.0
    growth = 0.0
    if len(past) >= 2:
        dt = (times[-1] - times[0]) / (len(times) - 1)
        steps = max(1, math.ceil((boot + dt) / dt - _EPS)) if dt > 0 else 1
        rise = _rise_quantile(np.append(values, x), steps)
        before = values[times <= now - boot]
        if len(before):
            growth = max(0.0, x - float(before[-1]))
    headroom = max(BETA * math.sqrt(hold), rise, growth)
    desired = max(0, math.ceil(hold + headroom - _EPS))
    reasons = (Reason("latency", f"demand {x:.2f} machines, hold {hold:.2f} (max of last "
                                 f"{HOLD_BOOTS * boot:g}s), headroom {headroom:.2f} "
                                 f"(sqrt staffing {BETA * math.sqrt(hold):.2f}, rise q{RISE_QUANTILE:g} "
                                 f"{rise:.2f}, growth {growth:.2f}) -> {desired}"),)
    return LatencyDecision(desired, reasons, x, hold, headroom)
