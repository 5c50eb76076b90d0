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
BETA = 0.0  # square-root staffing margin, in sqrt(machines)
RISE_QUANTILE = 0.9  # of past rises within one boot time
HISTORY_BOOTS = 20.0  # history read: this many boot times (at least an hour)
EVIDENCE_BOOTS = 3.0  # no scale-down before the history covers this many boot times
PERSIST = True
SMOOTH_S = 120.0
BACKLOG_FACTOR = 1.25
BACKLOG_SLACK = 1.0  # count demand seen on two consecutive reads
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
    """Work in the pool now, in machines; None when no reading says.

    Queued items are counted one slot each, but at most BACKLOG_FACTOR times the machines
    that are busy (plus BACKLOG_SLACK): a queue says capacity is short, not by how much (the
    readings carry no per-item time), and one machine per queued item over-launches in a burst.
    A shortfall that lasts raises the count again next tick, geometrically."""
    slots = pool.slots_per_machine
    queue = next((r.value for r in readings if r.kind == "queue_depth" and r.value is not None), None)
    util = next((r.value for r in readings if r.kind == "gpu_utilization" and r.value is not None), None)
    busy = None if util is None else max(0.0, util) * view.ready
    if queue is None:
        return busy
    x = max(0.0, queue) / slots
    if busy is not None:
        x = min(x, BACKLOG_FACTOR * busy + BACKLOG_SLACK)
    else:
        x = min(x, BACKLOG_FACTOR * view.capacity + BACKLOG_SLACK)
    return x


def _window_max(values: np.ndarray, steps: int, ahead: bool) -> np.ndarray:
    """max(values[i+1 .. i+steps]) (ahead) or max(values[i-steps+1 .. i]) (behind), for every i
    whose window is complete; entry k belongs to i = k (behind: i = k + steps - 1)."""
    n = len(values) - steps + (0 if ahead else 1)
    if n <= 0:
        return np.empty(0)
    first = 1 if ahead else 0
    out = values[first: first + n].copy()
    for j in range(1, steps):
        np.maximum(out, values[first + j: first + j + n], out=out)
    return out


def excess_quantile(values: np.ndarray, hold_steps: int, ahead_steps: int, q: float) -> float:
    """The q-quantile, over the recorded samples, of how far demand in the next `ahead_steps`
    rose above the hold (the max of the last `hold_steps`): what capacity kept by the hold
    alone would have missed.  0 with too little history."""
    behind = _window_max(values, hold_steps, ahead=False)  # behind[k] is the hold at i = k + hold_steps - 1
    future = _window_max(values, ahead_steps, ahead=True)  # future[i] for i = 0 .. n - ahead_steps - 1
    lo = hold_steps - 1
    m = len(future) - lo
    if m <= 0:
        return 0.0
    excess = future[lo: lo + m] - behind[:m]
    return max(0.0, float(np.quantile(excess, q)))


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
    raw = np.append(np.fromiter((v for _, v in past), float, len(past)), x)
    # Demand seen on two reads in a row: a burst the ready slots clear within a tick is not a
    # reason to boot machines (one machine per queued item over-launches); a shortfall that lasts is.
    values = np.minimum(raw, np.append(raw[:1], raw[:-1])) if PERSIST else raw
    if SMOOTH_S > 0 and len(past) >= 2:  # the level: a moving mean over SMOOTH_S
        dt = max((times[-1] - times[0]) / (len(times) - 1), 1e-3)
        k = max(1, round(SMOOTH_S / dt))
        if k > 1 and len(values) >= k:
            c = np.cumsum(np.insert(values, 0, 0.0))
            head = c[1:k] / np.arange(1, k)
            values = np.concatenate([head, (c[k:] - c[:-k]) / k])
    x_eff = float(values[-1])
    hold_s = HOLD_BOOTS * boot
    # hold: the highest demand of the last hold window, now included (ski rental)
    recent = values[:-1][times >= now - hold_s]
    hold = max(x_eff, float(recent.max())) if len(recent) else x_eff
    # headroom: how far demand rose above such a hold within one boot (and a tick), as recorded
    excess = 0.0
    if len(past) >= 2:
        dt = max((times[-1] - times[0]) / (len(times) - 1), 1e-3)
        hold_steps = max(1, round(hold_s / dt) + 1)
        ahead_steps = max(1, math.ceil((boot + dt) / dt - _EPS))
        excess = excess_quantile(values, hold_steps, ahead_steps, RISE_QUANTILE)
    slots = pool.slots_per_machine
    noise = BETA * math.sqrt(hold * slots) / slots  # square-root staffing, counted in slots
    headroom = max(noise, excess)
    desired = max(0, math.ceil(hold + headroom - _EPS))
    # No release without evidence: until the history covers a hold window (a cold start, a
    # restart without records) nothing says the capacity is unneeded.
    if desired < current and (len(times) == 0 or times[0] > now - EVIDENCE_BOOTS * boot):
        desired = current
    reasons = (Reason("latency", f"demand {x:.2f} machines, hold {hold:.2f} (max of last {hold_s:g}s), "
                                 f"headroom {headroom:.2f} (sqrt staffing {noise:.2f}, q{RISE_QUANTILE:g} rise "
                                 f"over the hold within a boot {excess:.2f}) -> {desired}"),)
    return LatencyDecision(desired, reasons, x, hold, headroom)
