"""`decide`: the one pure decision every caller shares (service, dry run, simulator).

Per pool, in this order, each step recording a Reason when it changes the number:

  signals → recommendation (the highest of the signals; a missing signal forbids
  scale-down) → tolerance → scale-down stabilization → cooldowns → step limit →
  min/max → quota headroom → budget caps (global, then per pool) → victims (a pool that
  reads per-machine work removes only machines that read idle).

A pool with `latency_budget_s` takes its recommendation from fleet/policy/latency.py,
which owns its own hysteresis, so tolerance, stabilization, cooldowns and the step
limit are skipped for it; the hard limits (min/max, quota, budget) never are.

Nothing here reads a clock, a socket, a file or the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fleet.config import Config, PoolConfig
from fleet.model import (
    Action,
    CreateAction,
    DestroyAction,
    DrainAction,
    Fleet,
    History,
    Machine,
    MachineState,
    Plan,
    PoolHistory,
    PoolPlan,
    PoolView,
    Reason,
    SignalReading,
    UndrainAction,
)
from fleet.policy.recommend import describe, recommend
from fleet.policy.removal import choose_victims
from fleet.policy.settings import DEFAULT, LatencySettings

_NOT_READY = (MachineState.REQUESTED, MachineState.BOOTING)


class _Budget:
    """Hourly burn left under the global cap, shared by the pools in config order."""

    def __init__(self, cap: float | None, burn_now: float):
        self.cap = cap
        self.burn = burn_now

    def room(self) -> float:
        return math.inf if self.cap is None else self.cap - self.burn


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
    budget = _Budget(config.budget.max_hourly_usd, burn_now)
    plans = []
    for pool in config.pools:
        view = fleet.pools.get(pool.name) or PoolView(name=pool.name)
        plans.append(decide_pool(pool, view, tuple(signals.get(pool.name, ())), history.of(pool.name), now,
                                 budget, settings))
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


def decide_pool(
    pool: PoolConfig,
    view: PoolView,
    readings: tuple[SignalReading, ...],
    history: PoolHistory,
    now: float,
    budget: _Budget,
    settings: LatencySettings = DEFAULT,
) -> PoolPlan:
    reasons: list[Reason] = []

    # Machines that never became ready are replaced: they do not count as capacity.
    stuck = tuple(m for m in view.machines
                  if m.state in _NOT_READY and now - m.created_at > pool.max_boot_seconds)
    # Machines the provider reports stopped or broken: not serving, still billed.
    stuck += tuple(m for m in view.machines if m.state is MachineState.FAILED)
    stuck_ids = {m.id for m in stuck}
    live = tuple(m for m in view.machines if m.id not in stuck_ids
                 and m.state in (*_NOT_READY, MachineState.READY))
    ready = sum(1 for m in live if m.state is MachineState.READY)
    current = len(live)
    draining = [m for m in view.machines if m.state is MachineState.DRAINING]  # billed, not capacity
    base = dict(pool=pool.name, provider=pool.provider, ready=ready, booting=current - ready, current=current,
                signals=readings, draining=len(draining))

    if view.listing_error or view.provider_blocked:
        why = view.listing_error or view.provider_blocked
        return PoolPlan(recommendation=current, desired=current, held=True,
                        reasons=(Reason("held", f"holding: {why}"),), **base)
    if stuck:
        reasons.append(Reason("replace", f"replacing {len(stuck)} machine(s) that failed or were not ready "
                                         f"after max_boot_seconds={pool.max_boot_seconds:g}"))

    demand_sample: float | None = None
    settled_before = math.inf  # ready machines that came up after this were just bought
    if pool.latency_budget_s is not None:
        from fleet.policy.latency import hold_seconds
        from fleet.policy.latency import recommend as latency_recommend  # issue 6's policy

        settled_before = now - hold_seconds(pool, settings)

        decision = latency_recommend(pool, view, readings, history, now, settings)
        recommendation, desired = decision.desired, decision.desired
        reasons.extend(decision.reasons)
        demand_sample = decision.demand_sample
        # A missing queue_wait is no reason to hold: the presets read it as missing when no
        # request started lately (an idle pool), and without it the policy counts all queued
        # work as late, the side that buys.
        down_allowed = not any(r.missing and r.kind != "queue_wait" for r in readings)
        if not down_allowed and desired < current:
            desired = current
            reasons.append(Reason("missing_signal", "a signal is missing: not scaling down"))
    else:
        recommendation, down_allowed = _from_signals(pool, readings, ready, current, reasons)
        desired = _tolerance(pool, recommendation, current, reasons)
        recommendation = desired  # what the stabilization window remembers
        desired = _stabilize(pool, desired, current, history, now, reasons)
        if not down_allowed and desired < current:
            desired = current
        desired = _cooldown(pool, desired, current, history, now, reasons)
        desired = _step_limit(pool, desired, current, reasons)

    desired = _min_max(pool, desired, reasons)
    desired = _quota(view, desired, current, reasons)
    desired = _budget(pool, view, desired, current, budget, reasons)

    actions: list[Action] = []
    drain_timeout = pool.machine_work.drain_timeout_s if pool.machine_work is not None else None
    # a draining machine is warm and already billed: take it back before buying (the busiest first:
    # an idle one was about to go anyway)
    undrained = (sorted(draining, key=lambda m: (-m.work_left, m.id))[:max(0, desired - current)]
                 if drain_timeout is not None and draining and desired > current else [])
    if undrained:
        actions.append(UndrainAction(pool=pool.name, machine_ids=tuple(m.id for m in undrained)))
        reasons.append(Reason("undrain", f"taking back {len(undrained)} draining machine(s) instead of buying: "
                                         + ", ".join(m.id for m in undrained)))
    if desired > current + len(undrained):
        price = view.launch_price_hourly_usd or 0.0
        count = desired - current - len(undrained)
        actions.append(CreateAction(pool=pool.name, count=count, size=pool.size[0],
                                    region=pool.region[0] if pool.region else "", price_hourly_usd=price))
        budget.burn += count * price
    chosen = choose_victims(live, current - desired, keep_booting=pool.latency_budget_s is not None,
                            work_seen=view.machine_work is not None, settled_before=settled_before)
    drained = _drained(draining, {m.id for m in undrained}, drain_timeout, now, reasons) if draining else ()
    if view.machine_work is not None:
        reasons.append(Reason("machine_work", view.machine_work))
        busy = [m for m in chosen if m.state is MachineState.READY and m.work_left > 0]
        if busy:
            # work running on a machine is never cut off at once: it is drained, or kept until idle
            chosen = tuple(m for m in chosen if m not in busy)
            listed = ", ".join(f"{m.id} ({_work(m.work_left)})" for m in busy)
            if drain_timeout is not None:
                actions.append(DrainAction(pool=pool.name, machine_ids=tuple(m.id for m in busy)))
                reasons.append(Reason("drain", f"draining {len(busy)} busy machine(s): {listed}; tagged "
                                               f"fleet-draining, destroyed once idle or after {drain_timeout:g}s"))
            else:
                desired += len(busy)
                reasons.append(Reason("busy", f"keeping {len(busy)} busy machine(s) until they read idle: "
                                              + listed))
    victims = stuck + chosen + drained
    if victims:
        actions.append(DestroyAction(pool=pool.name, machine_ids=tuple(m.id for m in victims)))
    return PoolPlan(recommendation=recommendation, desired=desired, actions=tuple(actions),
                    reasons=tuple(reasons), demand_sample=demand_sample, **base)


def _drained(draining: Sequence[Machine], kept: set[str], timeout: float | None, now: float,
             reasons: list[Reason]) -> tuple[Machine, ...]:
    """Draining machines whose drain is over: they read idle, or the drain timed out (or the pool
    drains no more: `timeout` None).  `kept`: taken back into the pool this tick."""
    idle, late = [], []
    for m in draining:
        if m.id in kept:
            continue
        if m.work_left <= 0:
            idle.append(m)
        elif timeout is None or now - (m.draining_since if m.draining_since is not None else now) >= timeout:
            late.append(m)
    if idle:
        reasons.append(Reason("drained", f"{len(idle)} draining machine(s) read idle: destroying "
                                         + ", ".join(m.id for m in idle)))
    if late:
        why = "the pool no longer drains" if timeout is None else f"drain_timeout_s={timeout:g} passed"
        reasons.append(Reason("drain_timeout", f"destroying {len(late)} draining machine(s) still busy ({why}): "
                                               + ", ".join(f"{m.id} ({_work(m.work_left)})" for m in late)))
    return (*idle, *late)


def _work(work_left: float) -> str:
    return "unread" if math.isinf(work_left) else f"work {work_left:g}"


# ---------------------------------------------------------------- the steps


def _from_signals(pool: PoolConfig, readings: Sequence[SignalReading], ready: int, current: int,
                  reasons: list[Reason]) -> tuple[int, bool]:
    """The highest recommendation of the signals, and whether scaling down is allowed."""
    if not pool.signals:
        return pool.min, True
    votes: list[int] = []
    missing: list[str] = []
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
        return current, False
    return max(votes), not missing


def _tolerance(pool: PoolConfig, recommendation: int, current: int, reasons: list[Reason]) -> int:
    if current > 0 and recommendation != current and abs(recommendation - current) <= pool.tolerance * current:
        reasons.append(Reason("tolerance", f"wanted {recommendation}, within tolerance "
                                           f"{pool.tolerance:.0%} of {current}: no change"))
        return current
    return recommendation


def _stabilize(pool: PoolConfig, desired: int, current: int, history: PoolHistory, now: float,
               reasons: list[Reason]) -> int:
    window = pool.scale_down_stabilization_s
    if desired >= current or window <= 0:
        return desired
    recent = [r for t, r in history.recommendations if now - t < window]
    highest = max([desired, *recent])
    stabilized = min(current, highest)
    if stabilized != desired:
        reasons.append(Reason("stabilization", f"wanted {desired}, scale-down stabilization: highest "
                                               f"recommendation in the last {window:g}s was {highest}"))
    return stabilized


def _cooldown(pool: PoolConfig, desired: int, current: int, history: PoolHistory, now: float,
              reasons: list[Reason]) -> int:
    if desired > current and pool.scale_up_cooldown_s > 0 and history.last_scale_up_at is not None:
        left = pool.scale_up_cooldown_s - (now - history.last_scale_up_at)
        if left > 0:
            reasons.append(Reason("cooldown", f"wanted {desired}, scale-up cooldown "
                                              f"{pool.scale_up_cooldown_s:g}s: {left:.0f}s left"))
            return current
    if desired < current and pool.scale_down_cooldown_s > 0:
        last = max((t for t in (history.last_scale_up_at, history.last_scale_down_at) if t is not None),
                   default=None)
        if last is not None:
            left = pool.scale_down_cooldown_s - (now - last)
            if left > 0:
                reasons.append(Reason("cooldown", f"wanted {desired}, scale-down cooldown "
                                                  f"{pool.scale_down_cooldown_s:g}s: {left:.0f}s left"))
                return current
    return desired


def _step_limit(pool: PoolConfig, desired: int, current: int, reasons: list[Reason]) -> int:
    step = max(pool.max_step_up, math.ceil(current * pool.max_step_up_percent / 100.0))
    if desired - current > step:
        reasons.append(Reason("step_limit", f"wanted {desired}, capped to {current + step} by the step "
                                            f"limit (+{step} per tick)"))
        return current + step
    return desired


def _min_max(pool: PoolConfig, desired: int, reasons: list[Reason]) -> int:
    if desired > pool.max:
        reasons.append(Reason("max", f"wanted {desired}, capped to {pool.max} by max={pool.max}"))
        return pool.max
    if desired < pool.min:
        reasons.append(Reason("min", f"wanted {desired}, raised to {pool.min} by min={pool.min}"))
        return pool.min
    return desired


def _quota(view: PoolView, desired: int, current: int, reasons: list[Reason]) -> int:
    if desired <= current:
        return desired
    if view.headroom is None:
        if view.headroom_note:
            reasons.append(Reason("quota_unknown", view.headroom_note))
        return desired
    allowed = current + max(0, view.headroom)
    if desired > allowed:
        note = f" ({view.headroom_note})" if view.headroom_note else ""
        reasons.append(Reason("quota", f"wanted {desired}, capped to {allowed} by the provider quota: "
                                       f"room for {max(0, view.headroom)} more{note}"))
        return allowed
    return desired


def _budget(pool: PoolConfig, view: PoolView, desired: int, current: int, budget: _Budget,
            reasons: list[Reason]) -> int:
    if desired <= current:
        return desired
    price = view.launch_price_hourly_usd
    caps: list[tuple[str, float]] = []
    if budget.cap is not None:
        caps.append((f"[budget] max_hourly_usd={budget.cap:g}", budget.room()))
    if pool.max_hourly_usd is not None:
        caps.append((f"pool max_hourly_usd={pool.max_hourly_usd:g}", pool.max_hourly_usd - view.burn_usd_per_hour))
    if not caps:
        return desired
    if price is None or price <= 0:
        reasons.append(Reason("budget", f"wanted {desired}, no launch: the price of {pool.size[0]} is unknown "
                                        "and a budget cap is set"))
        return current
    for label, room in caps:
        affordable = max(0, math.floor(room / price + 1e-9))
        if desired - current > affordable:
            capped = current + affordable
            reasons.append(Reason("budget", f"wanted {desired}, capped to {capped} by budget {label} "
                                            f"(${price:g}/h each, ${max(0.0, room):.2f}/h left)"))
            desired = capped
    return desired


__all__ = ["decide", "decide_pool"]
