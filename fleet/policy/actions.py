"""From a pool's final number to its actions: take draining machines back, buy the rest, choose
the victims (stuck ones, then what the shrink removes, then the drains that are over), and keep
or drain the busy ones among them.  Each step returns its actions and its reasons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.config import PoolConfig
from fleet.model import (
    CAPACITY_STATES,
    NOT_READY_STATES,
    Action,
    CreateAction,
    DestroyAction,
    DrainAction,
    Machine,
    MachineState,
    PoolView,
    Reason,
    UndrainAction,
)
from fleet.policy.removal import choose_victims


@dataclass(frozen=True)
class Machines:
    """A pool's machines, classified for this tick."""

    stuck: tuple[Machine, ...]  # failed, or not ready after max_boot_seconds: replaced, not capacity
    live: tuple[Machine, ...]  # capacity: booting or ready
    draining: tuple[Machine, ...]  # billed, not capacity
    ready: int

    @property
    def current(self) -> int:
        return len(self.live)


def classify(pool: PoolConfig, view: PoolView, now: float) -> Machines:
    # Machines that never became ready are replaced: they do not count as capacity.
    stuck = tuple(m for m in view.machines
                  if m.state in NOT_READY_STATES and now - m.created_at > pool.max_boot_seconds)
    # Machines the provider reports stopped or broken: not serving, still billed.
    stuck += tuple(m for m in view.machines if m.state is MachineState.FAILED)
    stuck_ids = {m.id for m in stuck}
    live = tuple(m for m in view.machines if m.id not in stuck_ids
                 and m.state in CAPACITY_STATES)
    draining = tuple(m for m in view.machines if m.state is MachineState.DRAINING)
    return Machines(stuck, live, draining, sum(1 for m in live if m.state is MachineState.READY))


def replaced(pool: PoolConfig, machines: Machines) -> Reason | None:
    if not machines.stuck:
        return None
    return Reason("replace", f"replacing {len(machines.stuck)} machine(s) that failed or were not ready "
                             f"after max_boot_seconds={pool.max_boot_seconds:g}")


@dataclass(frozen=True)
class Acts:
    actions: tuple[Action, ...]
    reasons: tuple[Reason, ...]
    desired: int  # raised by the busy machines a pool without drains keeps
    spent_usd_per_hour: float  # what the machines bought add to the burn


def act(pool: PoolConfig, view: PoolView, machines: Machines, desired: int, now: float,
        settled_before: float) -> Acts:
    """The actions that take the pool from its machines to `desired`."""
    drain_timeout = pool.machine_work.drain_timeout_s if pool.machine_work is not None else None
    undrained, taken_back = take_back(pool, machines, desired, drain_timeout)
    actions: list[Action] = [] if taken_back is None else [taken_back]
    reasons = [] if taken_back is None else [
        Reason("undrain", f"taking back {len(undrained)} draining machine(s) instead of buying: "
                          + ", ".join(m.id for m in undrained))]
    create = buy(pool, view, desired - machines.current - len(undrained))
    if create is not None:
        actions.append(create)
    current = machines.current
    chosen = choose_victims(machines.live, current - desired, keep_booting=pool.latency_budget_s is not None,
                            work_seen=view.machine_work is not None, settled_before=settled_before)
    drained, why = (drained_machines(machines.draining, {m.id for m in undrained}, drain_timeout, now)
                    if machines.draining else ((), ()))
    reasons += why
    if view.machine_work is not None:
        reasons.append(Reason("machine_work", view.machine_work))
        chosen, drain, kept, why_busy = spare_busy(pool, chosen, drain_timeout)
        actions += [drain] if drain is not None else []
        reasons += [why_busy] if why_busy is not None else []
        desired += kept
    victims = machines.stuck + chosen + drained
    if victims:
        actions.append(DestroyAction(pool=pool.name, machine_ids=tuple(m.id for m in victims)))
    spent = create.count * create.price_hourly_usd if create is not None else 0.0
    return Acts(tuple(actions), tuple(reasons), desired, spent)


def take_back(pool: PoolConfig, machines: Machines, desired: int,
              drain_timeout: float | None) -> tuple[tuple[Machine, ...], UndrainAction | None]:
    """A draining machine is warm and already billed: take it back before buying (the busiest
    first: an idle one was about to go anyway)."""
    want = desired - machines.current
    if drain_timeout is None or not machines.draining or want <= 0:
        return (), None
    undrained = tuple(sorted(machines.draining, key=lambda m: (-m.work_left, m.id))[:want])
    if not undrained:
        return (), None
    return undrained, UndrainAction(pool=pool.name, machine_ids=tuple(m.id for m in undrained))


def buy(pool: PoolConfig, view: PoolView, count: int) -> CreateAction | None:
    if count <= 0:
        return None
    price = view.launch_price_hourly_usd or 0.0
    return CreateAction(pool=pool.name, count=count, size=pool.size[0],
                        region=pool.region[0] if pool.region else "", price_hourly_usd=price)


def spare_busy(pool: PoolConfig, chosen: tuple[Machine, ...], drain_timeout: float | None
               ) -> tuple[tuple[Machine, ...], DrainAction | None, int, Reason | None]:
    """Work running on a machine is never cut off at once: a busy victim is drained, or kept until
    idle.  The victims left, the drain, how many are kept, and the reason."""
    busy = [m for m in chosen if m.state is MachineState.READY and m.work_left > 0]
    if not busy:
        return chosen, None, 0, None
    chosen = tuple(m for m in chosen if m not in busy)
    listed = ", ".join(f"{m.id} ({_work(m.work_left)})" for m in busy)
    if drain_timeout is not None:
        drain = DrainAction(pool=pool.name, machine_ids=tuple(m.id for m in busy))
        return chosen, drain, 0, Reason("drain", f"draining {len(busy)} busy machine(s): {listed}; tagged "
                                                 f"fleet-draining, destroyed once idle or after {drain_timeout:g}s")
    return chosen, None, len(busy), Reason("busy", f"keeping {len(busy)} busy machine(s) until they read idle: "
                                                   + listed)


def drained_machines(draining: Sequence[Machine], kept: set[str], timeout: float | None,
                     now: float) -> tuple[tuple[Machine, ...], tuple[Reason, ...]]:
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
    reasons = []
    if idle:
        reasons.append(Reason("drained", f"{len(idle)} draining machine(s) read idle: destroying "
                                         + ", ".join(m.id for m in idle)))
    if late:
        why = "the pool no longer drains" if timeout is None else f"drain_timeout_s={timeout:g} passed"
        reasons.append(Reason("drain_timeout", f"destroying {len(late)} draining machine(s) still busy ({why}): "
                                               + ", ".join(f"{m.id} ({_work(m.work_left)})" for m in late)))
    return (*idle, *late), tuple(reasons)


def _work(work_left: float) -> str:
    return "unread" if math.isinf(work_left) else f"work {work_left:g}"
