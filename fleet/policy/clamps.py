"""The clamps `decide` applies to a pool's recommendation, in a chain.

Each clamp takes the number so far and returns the number it allows and its `Reason` (None
when it says nothing); `limit` runs a chain and collects the reasons in order.  The policy's
own clamps (tolerance, stabilization, a missing signal, cooldowns, the step limit) come from
the recommendation step; the hard limits (min/max, quota, the budget caps) follow for every
pool.  The budget shared by the pools is a `Budget` value handed from pool to pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from fleet.config import PoolConfig
from fleet.model import PoolHistory, PoolView, Reason

Clamped = tuple[int, Reason | None]
Clamp = Callable[[int], Clamped]


def limit(desired: int, clamps: Iterable[Clamp]) -> tuple[int, tuple[Reason, ...]]:
    """Run `desired` through the clamps in order: the number left and every reason given."""
    reasons: list[Reason] = []
    for clamp in clamps:
        desired, why = clamp(desired)
        if why is not None:
            reasons.append(why)
    return desired, tuple(reasons)


@dataclass(frozen=True)
class Budget:
    """The hourly burn under the global cap (`[budget] max_hourly_usd`, None: no cap), handed
    from pool to pool in config order: each pool's step returns the budget left for the next."""

    cap: float | None
    burn: float
    shed: bool = True  # [budget] over_cap = "shed": a burn past a cap sheds machines (else: only warn)
    # shed by the pools before this one, this tick: still billed until they are gone (no room to
    # buy with), but the pools after this one need not shed for it again
    shedding: float = 0.0

    def room(self) -> float:
        return math.inf if self.cap is None else self.cap - self.burn

    def spend(self, usd_per_hour: float) -> Budget:
        return replace(self, burn=self.burn + usd_per_hour)

    def shed_for(self, usd_per_hour: float) -> Budget:
        return replace(self, shedding=self.shedding + usd_per_hour)


# ---------------------------------------------------------------- the policy's own (threshold pools)


def tolerance(pool: PoolConfig, current: int, recommendation: int) -> Clamped:
    if current > 0 and recommendation != current and abs(recommendation - current) <= pool.tolerance * current:
        return current, Reason("tolerance", f"wanted {recommendation}, within tolerance "
                                            f"{pool.tolerance:.0%} of {current}: no change")
    return recommendation, None


def stabilization(pool: PoolConfig, current: int, history: PoolHistory, now: float, desired: int) -> Clamped:
    window = pool.scale_down_stabilization_s
    if desired >= current or window <= 0:
        return desired, None
    recent = [r for t, r in history.recommendations if now - t < window]
    highest = max([desired, *recent])
    stabilized = min(current, highest)
    if stabilized != desired:
        return stabilized, Reason("stabilization", f"wanted {desired}, scale-down stabilization: highest "
                                                   f"recommendation in the last {window:g}s was {highest}")
    return stabilized, None


def no_scale_down(current: int, allowed: bool, why: Reason | None, desired: int) -> Clamped:
    """A missing signal forbids scaling down (`why`: the reason to give, None when already given)."""
    if not allowed and desired < current:
        return current, why
    return desired, None


def cooldown(pool: PoolConfig, current: int, history: PoolHistory, now: float, desired: int) -> Clamped:
    if desired > current and pool.scale_up_cooldown_s > 0 and history.last_scale_up_at is not None:
        left = pool.scale_up_cooldown_s - (now - history.last_scale_up_at)
        if left > 0:
            return current, Reason("cooldown", f"wanted {desired}, scale-up cooldown "
                                               f"{pool.scale_up_cooldown_s:g}s: {left:.0f}s left")
    if desired < current and pool.scale_down_cooldown_s > 0:
        last = max((t for t in (history.last_scale_up_at, history.last_scale_down_at) if t is not None),
                   default=None)
        if last is not None:
            left = pool.scale_down_cooldown_s - (now - last)
            if left > 0:
                return current, Reason("cooldown", f"wanted {desired}, scale-down cooldown "
                                                   f"{pool.scale_down_cooldown_s:g}s: {left:.0f}s left")
    return desired, None


def step_limit(pool: PoolConfig, current: int, desired: int) -> Clamped:
    step = max(pool.max_step_up, math.ceil(current * pool.max_step_up_percent / 100.0))
    if desired - current > step:
        return current + step, Reason("step_limit", f"wanted {desired}, capped to {current + step} by the step "
                                                    f"limit (+{step} per tick)")
    return desired, None


# ---------------------------------------------------------------- the hard limits (every pool)


def min_max(pool: PoolConfig, desired: int) -> Clamped:
    if desired > pool.max:
        return pool.max, Reason("max", f"wanted {desired}, capped to {pool.max} by max={pool.max}")
    if desired < pool.min:
        return pool.min, Reason("min", f"wanted {desired}, raised to {pool.min} by min={pool.min}")
    return desired, None


def quota(view: PoolView, current: int, desired: int) -> Clamped:
    if desired <= current:
        return desired, None
    if view.headroom is None:
        return desired, Reason("quota_unknown", view.headroom_note) if view.headroom_note else None
    allowed = current + max(0, view.headroom)
    if desired > allowed:
        note = f" ({view.headroom_note})" if view.headroom_note else ""
        return allowed, Reason("quota", f"wanted {desired}, capped to {allowed} by the provider quota: "
                                        f"room for {max(0, view.headroom)} more{note}")
    return desired, None


def fleet_budget(pool: PoolConfig, view: PoolView, budget: Budget, current: int, desired: int) -> Clamped:
    """The global hourly cap, with what the pools before this one plan to buy (or shed) counted."""
    if budget.cap is None:
        return desired, None
    label = f"[budget] max_hourly_usd={budget.cap:g}"
    return (_over(view, label, budget.room(), current, desired, budget.shed, budget.shedding)
            or _afford(pool, view, label, budget.room(), current, desired))


def pool_budget(pool: PoolConfig, view: PoolView, budget: Budget, current: int, desired: int) -> Clamped:
    if pool.max_hourly_usd is None:
        return desired, None
    label = f"pool max_hourly_usd={pool.max_hourly_usd:g}"
    room = pool.max_hourly_usd - view.burn_usd_per_hour
    return _over(view, label, room, current, desired, budget.shed) or _afford(pool, view, label, room, current,
                                                                               desired)


def _over(view: PoolView, label: str, room: float, current: int, desired: int, shed: bool,
          shed_already: float = 0.0) -> Clamped | None:
    """A burn already past the cap (it was lowered, or a price rose): shed the machines that
    bring it back under, in the pool's own removal order, or (over_cap = "warn") say so and hold.
    Burn already on its way out (destroys in progress, machines a listing lost) is not shed for."""
    over = -room - view.leaving_usd_per_hour - shed_already
    price = view.live_price_usd_per_hour
    if over <= 1e-9 or price is None or current == 0:
        return None
    if not shed:
        return min(desired, current), Reason("budget_over", f"burn is ${-room:.2f}/h over budget {label}; "
                                                            "not shedding (over_cap = \"warn\")")
    target = max(0, current - math.ceil(over / price - 1e-9))
    if desired <= target:
        return desired, None
    return target, Reason("budget_shed", f"burn is ${-room:.2f}/h over budget {label}: shedding "
                                         f"{current - target} machine(s) in the pool's removal order")


def _afford(pool: PoolConfig, view: PoolView, label: str, room: float, current: int, desired: int) -> Clamped:
    if desired <= current:
        return desired, None
    price = view.launch_price_hourly_usd
    if price is None or price <= 0:
        return current, Reason("budget", f"wanted {desired}, no launch: the price of "
                                         f"{', '.join(view.unpriced) or pool.size[0]} is unknown "
                                         "and a budget cap is set")
    affordable = max(0, math.floor(room / price + 1e-9))
    if desired - current > affordable:
        capped = current + affordable
        return capped, Reason("budget", f"wanted {desired}, capped to {capped} by budget {label} "
                                        f"(${price:g}/h each, ${max(0.0, room):.2f}/h left)")
    return desired, None
