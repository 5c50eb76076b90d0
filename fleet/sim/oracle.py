"""The clairvoyant lower bound: what a zero-wait fleet that knew the future would pay.

Every request starts the moment it arrives, so `busy(t)` slots are in service and
`need(t) = ceil(busy(t) / slots)` machines must be ready.  Machine k serves the
times when need(t) >= k.  It is created `boot_s` before each stretch of need and
kept through idle gaps no longer than `boot_s` (ski rental: keeping it costs the
gap, releasing and re-creating costs the boot), and billed like the cloud (per
second, 60 s minimum, boot included).  `work_usd` is the work itself at the price:
total GPU seconds / slots per machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fleet.sim.engine import BILLING
from fleet.sim.trace import Trace


@dataclass(frozen=True)
class LowerBound:
    oracle_usd: float
    work_usd: float
    machine_s: float  # the oracle's billed lifetimes, unrounded
    times: np.ndarray  # step function of need(t): value need[i] holds from times[i]
    need: np.ndarray
    intervals: tuple[tuple[float, float], ...] = ()  # (created, destroyed) of every oracle machine
    price: float = 0.0

    def cost_between(self, start: float, end: float) -> float:
        """Machine time inside [start, end] at the price (pro rata: for judging part of a trace)."""
        inside = sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.intervals)
        return inside * self.price / 3600.0

    def as_dict(self) -> dict[str, float]:
        return {"oracle_usd": self.oracle_usd, "work_usd": self.work_usd}


def need_steps(arrival: np.ndarray, service: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Machines needed at zero wait, as a step function (times, values); ends at 0."""
    times = np.concatenate([arrival, arrival + service])
    delta = np.concatenate([np.ones(len(arrival), np.int64), -np.ones(len(arrival), np.int64)])
    order = np.lexsort((delta, times))  # at a tie, a finish frees its slot before a start takes one
    times, delta = times[order], delta[order]
    busy = np.cumsum(delta)
    # keep the last value at each distinct time
    last = np.ones(len(times), dtype=bool)
    last[:-1] = times[1:] != times[:-1]
    times, busy = times[last], busy[last]
    need = -(-busy // slots)
    change = np.ones(len(need), dtype=bool)
    change[1:] = need[1:] != need[:-1]
    return times[change], need[change]


def lower_bound(trace: Trace, slots: int, boot_s: float, price_hourly_usd: float) -> LowerBound:
    times, need = need_steps(trace.arrival_s, trace.service_s, slots)
    intervals = machine_intervals(times.tolist(), need.tolist(), boot_s)
    lifetimes = [b - a for a, b in intervals]
    oracle = sum(BILLING.cost(life, price_hourly_usd) for life in lifetimes)
    work = float(trace.service_s.sum()) / slots * price_hourly_usd / 3600.0
    return LowerBound(oracle, work, float(sum(lifetimes)), times, need, tuple(intervals), price_hourly_usd)


def machine_lifetimes(times: list[float], need: list[int], boot_s: float) -> list[float]:
    """Lifetime (boot included) of every oracle machine, from the need step function."""
    return [b - a for a, b in machine_intervals(times, need, boot_s)]


def machine_intervals(times: list[float], need: list[int], boot_s: float) -> list[tuple[float, float]]:
    """(created, destroyed) of every oracle machine: created `boot_s` before its first need."""
    lifetimes: list[tuple[float, float]] = []
    # per level k (1-based): start of the current run, end of the last stretch of need
    run_start: list[float] = []
    last_end: list[float] = []
    open_since: list[float | None] = []
    level = 0
    for t, n in zip(times, need, strict=True):
        if n > level:
            for k in range(level, n):
                if k >= len(run_start):
                    run_start.append(t)
                    last_end.append(-math.inf)
                    open_since.append(t)
                elif t - last_end[k] <= boot_s:
                    open_since[k] = t  # idle gap no longer than a boot: the machine stayed
                else:
                    lifetimes.append((run_start[k] - boot_s, last_end[k]))
                    run_start[k] = t
                    open_since[k] = t
        elif n < level:
            for k in range(n, level):
                last_end[k] = t
                open_since[k] = None
        level = n
    for k in range(len(run_start)):
        if open_since[k] is None:  # every level closes: the step function ends at zero
            lifetimes.append((run_start[k] - boot_s, last_end[k]))
    return lifetimes
