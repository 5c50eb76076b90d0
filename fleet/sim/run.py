"""One replay scenario: a pool from the user's config, a trace, and the policies to compare."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fleet.config import Config, PoolConfig
from fleet.policy.settings import DEFAULT, LatencySettings
from fleet.sim.engine import EngineSettings, RunResult, SimPolicy, run
from fleet.sim.oracle import LowerBound, lower_bound, need_steps
from fleet.sim.policies import FleetPolicy, HpaPolicy, Limits, ReactivePolicy, StaticPolicy
from fleet.sim.trace import Trace
from providers.simulated import PRICE_TABLE

POLICIES = ("fleet", "static", "reactive", "hpa")
# A replay ticks from the first arrival until the last request is served: its time is the ticks'
# count, so that count may grow with the trace and never with one value in it.
MIN_TICKS = 500_000  # about a minute a policy; 87 days at 15 s ticks
TICKS_PER_REQUEST = 50
STATIC_TARGET = 0.99  # the static baseline: smallest always-on fleet meeting the budget for 99%


class ScenarioError(Exception):
    """The config cannot be simulated (unknown pool, unknown price)."""


@dataclass(frozen=True)
class Scenario:
    config: Config
    pool: PoolConfig
    trace: Trace
    price: float
    quota: int | None
    tick_s: float
    budget_s: float
    seed: int = 0
    initial: int = 0  # machines ready at t = 0 for every dynamic policy (see `warm_start`)
    judge_from_s: float = 0.0  # benchmarks: judge only requests arriving from here (tuned before)
    machine_work: bool = True  # the fleet policy sees each machine's work (`scenario`: as the pool's config)
    policy_settings: LatencySettings = DEFAULT  # the latency policy's constants (bench/sweep.py tunes them)

    @property
    def settings(self) -> EngineSettings:
        sim = self.pool.simulation
        return EngineSettings(slots=self.pool.slots_per_machine, boot_s=self.pool.boot_seconds,
                              price_hourly_usd=self.price, boot_jitter_s=sim.boot_jitter_s,
                              lag_s=sim.signal_lag_s, seed=self.seed, initial_ready=self.initial,
                              quota=self.quota)

    @property
    def limits(self) -> Limits:
        return Limits.of(self.config, self.pool, self.price, self.quota)

    @property
    def warmup_s(self) -> float:
        return max(self.pool.boot_seconds, self.judge_from_s)


def pick_pool(config: Config, name: str | None) -> PoolConfig:
    if name is None:
        latency = [p for p in config.pools if p.latency_budget_s is not None]
        if len(config.pools) == 1:
            return config.pools[0]
        if len(latency) == 1:
            return latency[0]
        names = ", ".join(p.name for p in config.pools) or "none"
        raise ScenarioError(f"give --pool: the config has {len(config.pools)} pools ({names})")
    try:
        return config.pool(name)
    except KeyError:
        names = ", ".join(p.name for p in config.pools) or "none"
        raise ScenarioError(f"no pool named {name!r} in the config (pools: {names})") from None


def pool_price(config: Config, pool: PoolConfig) -> float:
    size = pool.size[0]
    price = pool.price_override(size)
    if price is None and config.providers.simulated is not None:
        price = config.providers.simulated.prices.get(size)
    if price is None:
        price = PRICE_TABLE.get(size)
    if price is None:
        raise ScenarioError(f"pool {pool.name}: no price for size {size!r}: set price_hourly_usd")
    return price


def scenario(config: Config, pool: PoolConfig, trace: Trace, seed: int = 0) -> Scenario:
    quota = None
    if pool.provider == "simulated" and config.providers.simulated is not None:
        quota = config.providers.simulated.quota_machines
    budget = pool.latency_budget_s
    if budget is None:
        raise ScenarioError(f"pool {pool.name}: set latency_budget_s (the SLO every policy is judged by)")
    price = pool_price(config, pool)
    check_ticks(trace, config.fleet.tick_seconds, machines_allowed(config, pool, price, quota) * pool.slots_per_machine)
    initial = min(warm_start(trace, pool), machines_allowed(config, pool, price, quota))
    # the fleet policy sees what `fleet run` would: each machine's work only when the pool reads it
    return Scenario(config, pool, trace, price, quota, config.fleet.tick_seconds, budget, seed, initial,
                    machine_work=pool.machine_work is not None)


def check_ticks(trace: Trace, tick_s: float, slots: int) -> None:
    """Refuse a replay whose ticks would grow with a value in the trace (a request ending years
    on, work the pool's slots take years to serve) past what its size warrants."""
    ends = trace.arrival_s + trace.service_s
    last = int(np.argmax(ends))
    horizon = float(ends[last])
    work = float(trace.service_s.sum()) / max(1, slots)  # served back to back on every slot allowed
    ticks = max(horizon, work) / tick_s
    limit = max(MIN_TICKS, TICKS_PER_REQUEST * len(trace))
    if ticks <= limit:
        return
    if horizon >= work:
        where = f"line {trace.lines[last]}" if trace.lines is not None else f"request {last}"
        why = f"to {horizon / 86400:.1f} days, where the request on {where} ends"
        lead = f"{trace.name}: {where}: "
    else:
        why = (f"{work / 86400:.1f} days to serve its {float(trace.service_s.sum()):g} GPU seconds on the "
               f"{slots} slot(s) max, quota and caps allow")
        lead = f"{trace.name}: "
    raise ScenarioError(f"{lead}the replay would run {ticks:,.0f} ticks of {tick_s:g} s ({why}) for "
                        f"{len(trace):,} requests; at most {limit:,} ({TICKS_PER_REQUEST} a request, or "
                        f"{MIN_TICKS:,}): raise fleet.tick_seconds, or replay a part of the trace")


def machines_allowed(config: Config, pool: PoolConfig, price: float, quota: int | None) -> int:
    """The most machines the hard limits admit: max, quota, pool and fleet budget caps."""
    allowed = pool.max
    if quota is not None:
        allowed = min(allowed, quota)
    for cap in (pool.max_hourly_usd, config.budget.max_hourly_usd):
        if cap is not None:
            allowed = min(allowed, math.floor(cap / price + 1e-9))
    return max(0, allowed)


def warm_start(trace: Trace, pool: PoolConfig) -> int:
    """Machines every dynamic policy starts with, ready at t = 0: what the warm-up (the first
    `boot_seconds`) needs at zero wait, within min/max.  Starting cold would leave a warm-up
    backlog that spills into the measured period and decides the comparison by itself."""
    early = trace.arrival_s < pool.boot_seconds
    need = 0
    if early.any():
        _, steps = need_steps(trace.arrival_s[early], trace.service_s[early], pool.slots_per_machine)
        need = int(steps.max())
    return min(max(need, pool.min), pool.max)


def slo_attainment(scn: Scenario, result: RunResult) -> float:
    counted = scn.trace.arrival_s >= scn.warmup_s
    if not counted.any():
        counted = np.ones(len(scn.trace), dtype=bool)
    return float(np.mean(result.waits[counted] <= scn.budget_s + 1e-9))


def run_policy(scn: Scenario, name: str, progress: Callable[[float], None] | None = None) -> RunResult:
    policy: SimPolicy
    if name == "fleet":
        policy = FleetPolicy(scn.config, scn.pool, scn.price, scn.quota, scn.tick_s,
                             machine_work=scn.machine_work, settings=scn.policy_settings)
    elif name == "reactive":
        policy = ReactivePolicy(scn.limits, float(scn.pool.slots_per_machine), scn.tick_s)
    elif name == "hpa":
        policy = HpaPolicy(scn.limits, scn.pool.slots_per_machine, scn.tick_s)
    elif name == "static":
        return search_static(scn)
    else:
        raise ScenarioError(f"unknown policy {name!r} (one of {', '.join(POLICIES)}, all)")
    return run(scn.trace, scn.settings, policy, progress, scn.limits.violations)


def run_static(scn: Scenario, machines: int) -> RunResult:
    settings = scn.settings
    settings = EngineSettings(**{**settings.__dict__, "initial_ready": machines})
    result = run(scn.trace, settings, StaticPolicy(machines))
    result.violations = int(machines > machines_allowed(scn.config, scn.pool, scn.price, scn.quota))
    return result


def search_static(scn: Scenario, bound: LowerBound | None = None) -> RunResult:
    """The smallest always-on fleet whose SLO attainment is >= 99% (bisection; attainment
    grows with the fleet), within the pool's max."""
    bound = bound or lower_bound(scn.trace, scn.pool.slots_per_machine, scn.pool.boot_seconds, scn.price)
    cap = max(1, machines_allowed(scn.config, scn.pool, scn.price, scn.quota))
    lo = max(1, min(cap, math.floor(float(scn.trace.mean_busy_slots()) / scn.pool.slots_per_machine)))
    hi = max(lo, min(cap, int(bound.need.max()) if len(bound.need) else 1))
    results: dict[int, RunResult] = {}

    def ok(n: int) -> bool:
        results[n] = results.get(n) or run_static(scn, n)
        return slo_attainment(scn, results[n]) >= STATIC_TARGET

    while not ok(hi) and hi < cap:
        lo, hi = hi, min(cap, hi * 2)
    if not ok(hi):
        results[hi].notes.append(f"no static fleet up to max={cap} reaches {STATIC_TARGET:.0%}")
        return results[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return results[hi]


def run_all(scn: Scenario, names: Sequence[str],
            progress: Callable[[str, float], None] | None = None) -> tuple[list[RunResult], LowerBound]:
    bound = lower_bound(scn.trace, scn.pool.slots_per_machine, scn.pool.boot_seconds, scn.price)
    results = []
    for name in names:
        step = (lambda f, n=name: progress(n, f)) if progress else None
        if name == "static":
            results.append(search_static(scn, bound))
        else:
            results.append(run_policy(scn, name, step))
        if progress:
            progress(name, 1.0)
    return results, bound
