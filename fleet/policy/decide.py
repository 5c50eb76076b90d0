"""`decide`: the one pure decision every caller shares (service, dry run, simulator).

Per pool, a short pipeline of named steps, each returning its number and its Reasons:

  classify the machines (stuck / live / draining) → recommend (the highest of the threshold
  signals, a missing signal forbidding scale-down; or the latency policy) → the policy's own
  clamps (tolerance, scale-down stabilization, cooldowns, step limit) → the hard limits
  (min/max, quota headroom, budget caps: global, then per pool) → actions (undrain, create,
  victims: a pool that reads per-machine work removes only machines that read idle; drains).

A pool with `latency_budget_s` takes its recommendation from fleet/policy/latency.py,
which owns its own hysteresis, so tolerance, stabilization, cooldowns and the step
limit are skipped for it; the hard limits (min/max, quota, budget) never are.  The budget
shared by the pools is a value: each pool's step returns its plan and the budget left.

Nothing here reads a clock, a socket, a file or the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from fleet.config import Config, PoolConfig
from fleet.model import (
    Action,
    DestroyAction,
    Fleet,
    History,
    Plan,
    PoolHistory,
    PoolPlan,
    PoolView,
    Reason,
    SignalReading,
)
from fleet.policy import clamps
from fleet.policy.actions import Machines, act, classify, replaced
from fleet.policy.clamps import Budget, Clamp, limit
from fleet.policy.latency import hold_seconds
from fleet.policy.latency import recommend as latency_recommend
from fleet.policy.recommend import from_signals
from fleet.policy.settings import DEFAULT, LatencySettings


def decide(
    config: Config,
    fleet: Fleet,
    signals: Mapping[str, Sequence[SignalReading]],
    history: History,
    now: float,
    settings: LatencySettings = DEFAULT,
) -> Plan:
    """The plan for every pool; `settings` tunes the latency policy (the shipped constants by default)."""
    burn_now = fleet.burn_usd_per_hour
    budget = Budget(config.budget.max_hourly_usd, burn_now, shed=config.budget.over_cap == "shed")
    plans = []
    for pool in config.pools:
        view = fleet.pools.get(pool.name) or PoolView(name=pool.name)
        plan, budget = decide_pool(pool, view, tuple(signals.get(pool.name, ())), history.of(pool.name), now,
                                   budget, settings)
        plans.append(plan)
    return Plan(at=now, pools=tuple(plans), burn_now_usd_per_hour=burn_now,
                burn_planned_usd_per_hour=budget.burn - _destroyed_burn(plans, fleet))


def _destroyed_burn(plans: Sequence[PoolPlan], fleet: Fleet) -> float:
    total = 0.0
    for plan in plans:
        view = fleet.pools.get(plan.pool)
        if view is None:
            continue
        prices = {m.id: m.price_hourly_usd for m in view.machines}
        for action in plan.actions:
            if isinstance(action, DestroyAction):
                total += sum(prices.get(i, 0.0) for i in action.machine_ids)
    return total


@dataclass(frozen=True)
class Recommendation:
    """What the pool's policy asks for, before the hard limits."""

    recommendation: int  # what the plan records (and the stabilization window remembers)
    desired: int  # after the policy's own clamps
    reasons: tuple[Reason, ...]
    demand_sample: float | None = None
    settled_before: float = math.inf  # ready machines that came up after this were just bought


def decide_pool(
    pool: PoolConfig,
    view: PoolView,
    readings: tuple[SignalReading, ...],
    history: PoolHistory,
    now: float,
    budget: Budget,
    settings: LatencySettings = DEFAULT,
) -> tuple[PoolPlan, Budget]:
    """One pool's plan, and the budget left for the pools after it."""
    machines = classify(pool, view, now)
    if view.listing_error or view.provider_blocked:
        why = view.listing_error or view.provider_blocked
        return _plan(pool, machines, readings, machines.current, machines.current, held=True,
                     reasons=(Reason("held", f"holding: {why}"),)), budget
    if pool.latency_budget_s is not None:
        rec = _latency(pool, view, readings, history, now, machines, settings)
    else:
        rec = _threshold(pool, readings, history, now, machines)
    desired, capped = limit(rec.desired, _hard_limits(pool, view, budget, machines.current))
    acts = act(pool, view, machines, desired, now, rec.settled_before)
    stuck = replaced(pool, machines)
    reasons = (*((stuck,) if stuck is not None else ()), *rec.reasons, *capped, *acts.reasons)
    plan = _plan(pool, machines, readings, rec.recommendation, acts.desired, actions=acts.actions,
                 reasons=reasons, demand_sample=rec.demand_sample)
    budget = budget.spend(acts.spent_usd_per_hour)
    if any(r.code == "budget_shed" for r in capped):
        budget = budget.shed_for(max(0, machines.current - desired) * (view.live_price_usd_per_hour or 0.0))
    return plan, budget


def _plan(pool: PoolConfig, machines: Machines, readings: tuple[SignalReading, ...], recommendation: int,
          desired: int, *, actions: tuple[Action, ...] = (), reasons: tuple[Reason, ...] = (), held: bool = False,
          demand_sample: float | None = None) -> PoolPlan:
    return PoolPlan(pool=pool.name, provider=pool.provider, ready=machines.ready,
                    booting=machines.current - machines.ready, current=machines.current,
                    recommendation=recommendation, desired=desired, actions=actions, reasons=reasons,
                    signals=readings, held=held, draining=len(machines.draining), demand_sample=demand_sample)


def _hard_limits(pool: PoolConfig, view: PoolView, budget: Budget, current: int) -> tuple[Clamp, ...]:
    return (partial(clamps.min_max, pool), partial(clamps.quota, view, current),
            partial(clamps.fleet_budget, pool, view, budget, current),
            partial(clamps.pool_budget, pool, view, budget, current))


def _latency(pool: PoolConfig, view: PoolView, readings: tuple[SignalReading, ...], history: PoolHistory,
             now: float, machines: Machines, settings: LatencySettings) -> Recommendation:
    decision = latency_recommend(pool, view, readings, history, now, settings)
    # A missing queue_wait is no reason to hold: the presets read it as missing when no
    # request started lately (an idle pool), and without it the policy counts all queued
    # work as late, the side that buys.
    down_allowed = not any(r.missing and r.kind != "queue_wait" for r in readings)
    desired, held = clamps.no_scale_down(machines.current, down_allowed,
                                         Reason("missing_signal", "a signal is missing: not scaling down"),
                                         decision.desired)
    return Recommendation(decision.desired, desired, (*decision.reasons, *((held,) if held else ())),
                          decision.demand_sample, now - hold_seconds(pool, settings))


def _threshold(pool: PoolConfig, readings: tuple[SignalReading, ...], history: PoolHistory, now: float,
               machines: Machines) -> Recommendation:
    current = machines.current
    asked, down_allowed, said = from_signals(pool, readings, machines.ready, current)
    recommendation, within = clamps.tolerance(pool, current, asked)  # what the stabilization window remembers
    desired, clamped = limit(recommendation, (
        partial(clamps.stabilization, pool, current, history, now),
        partial(clamps.no_scale_down, current, down_allowed, None),  # from_signals said why
        partial(clamps.cooldown, pool, current, history, now),
        partial(clamps.step_limit, pool, current)))
    return Recommendation(recommendation, desired, (*said, *((within,) if within else ()), *clamped))


__all__ = ["Budget", "decide", "decide_pool"]
