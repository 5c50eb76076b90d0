"""Who decides in a replay: our policy (the real `fleet.policy.decide`) and the baselines.

- `FleetPolicy` builds the `Fleet`, signals and `History` the service would, calls
  `fleet.policy.decide` (the very function `fleet run` calls) and applies its Plan.
- `StaticPolicy`: a fixed always-on fleet (the size is searched by fleet.sim.run).
- `ReactivePolicy`: KEDA-style, desired = ceil(queue / target), scale-in only 300 s
  after the last scale event.
- `HpaPolicy`: Kubernetes HPA on GPU utilization 0.7, 10% tolerance, 300 s
  scale-down stabilization, at most +max(100%, 4) machines per 15 s.

Baselines obey the same hard limits decide applies (min/max, quota, budget caps),
so every policy reports zero violations when it is correct.  Each is a
`fleet.sim.engine.SimPolicy` (mypy checks it where fleet.sim.run builds them).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import fleet.policy
from fleet.config import Config, PoolConfig, signal_name
from fleet.model import (
    CreateAction,
    DestroyAction,
    DrainAction,
    Fleet,
    History,
    Machine,
    MachineState,
    PoolHistory,
    PoolPlan,
    PoolView,
    PreviousTick,
    SignalReading,
    UndrainAction,
)
from fleet.policy.latency import history_window_s
from fleet.policy.settings import DEFAULT, LatencySettings
from fleet.sim.engine import Engine, Snapshot

_STATES = {"ready": MachineState.READY, "booting": MachineState.BOOTING, "draining": MachineState.DRAINING}


@dataclass(frozen=True)
class Limits:
    """The hard limits of a pool: what no policy may exceed."""

    min: int
    max: int
    quota: int | None
    pool_cap_usd: float | None
    fleet_cap_usd: float | None
    price: float

    @classmethod
    def of(cls, config: Config, pool: PoolConfig, price: float, quota: int | None) -> Limits:
        return cls(pool.min, pool.max, quota, pool.max_hourly_usd, config.budget.max_hourly_usd, price)

    def clamp(self, desired: int, current: int, engine: Engine) -> int:
        desired = min(max(desired, self.min), self.max)
        if desired > current:
            if self.quota is not None:
                desired = min(desired, current + max(0, self.quota - engine.live_count()))
            burn = sum(engine.prices[m] for m in engine.alive)
            for cap in (self.pool_cap_usd, self.fleet_cap_usd):
                if cap is not None:
                    desired = min(desired, current + max(0, math.floor((cap - burn) / self.price + 1e-9)))
        return desired

    def violations(self, engine: Engine) -> int:
        """1 when the pool is past a hard limit after a tick's actions, else 0."""
        alive = engine.alive
        over = len(alive) > self.max and sum(1 for m in alive if not engine.draining[m]) > self.max
        over = over or (self.quota is not None and len(alive) > self.quota)
        if self.pool_cap_usd is not None or self.fleet_cap_usd is not None:
            burn = sum(engine.prices[m] for m in alive)
            for cap in (self.pool_cap_usd, self.fleet_cap_usd):
                over = over or (cap is not None and burn > cap + 1e-9)
        return int(over)


def scale_to(engine: Engine, desired: int) -> None:
    """Create or destroy to reach `desired` serving machines: booting (newest) first, then the least busy."""
    serving = [m for m in engine.alive if not engine.draining[m]]
    if desired > len(serving):
        engine.create(desired - len(serving))
    elif desired < len(serving):
        now = engine.now
        order = sorted(serving, key=lambda m: (engine.ready_at[m] <= now, engine.busy[m], -m))
        engine.destroy(order[: len(serving) - desired])


def readings_for(pool: PoolConfig, seen: Snapshot) -> tuple[SignalReading, ...]:
    """The pool's signals, read from the simulated queue: one reading per configured signal,
    plus `queue_depth` and `gpu_utilization` when a latency pool does not configure them."""
    queue = float(seen.waiting + seen.busy)
    util = seen.busy / (seen.ready * pool.slots_per_machine) if seen.ready else None
    values = {"queue_depth": queue, "backlog_seconds": queue, "gpu_utilization": util, "memory_pressure": util,
              "queue_wait": seen.wait_max}
    out = []
    for i, signal in enumerate(pool.signals):
        value = values[signal.kind]
        out.append(SignalReading(signal_name(i, signal), signal.kind, value, "simulated queue",
                                 error=None if value is not None else "no ready machine"))
    if pool.latency_budget_s is not None:
        kinds = {s.kind for s in pool.signals}
        for kind in ("queue_depth", "gpu_utilization"):
            if kind not in kinds:
                value = values[kind]
                out.append(SignalReading(kind, kind, value, "simulated queue",
                                         error=None if value is not None else "no ready machine"))
    return tuple(out)


@dataclass
class FleetPolicy:
    """Our policy: `fleet.policy.decide` with a one-pool Config, as the service calls it."""

    config: Config
    pool: PoolConfig
    price: float
    quota: int | None
    tick_s: float
    name: str = "fleet"
    # each machine's work in the view, as `fleet run` sees it with a pool's `machine_work` (False:
    # as it sees a pool without one)
    machine_work: bool = True
    settings: LatencySettings = DEFAULT  # the latency policy's constants, passed to decide
    _demand: deque[tuple[float, float]] = field(default_factory=deque)
    _recs: deque[tuple[float, int]] = field(default_factory=deque)
    _last_up: float | None = None
    _last_down: float | None = None
    _previous: PreviousTick | None = None
    _machines: dict[tuple[int, str, int], Machine] = field(default_factory=dict)
    decide = staticmethod(fleet.policy.decide)  # the service's own function (tests check identity)

    def __post_init__(self) -> None:
        self.config = self.config.model_copy(update={"pools": (self.pool,)})
        self._window = max(self.pool.scale_down_stabilization_s, history_window_s(self.pool, self.settings))

    def _view(self, engine: Engine) -> PoolView:
        """The machines as decide sees them; a Machine value is rebuilt only when its state
        or its work changed (a 23-day replay builds the view 130,000 times)."""
        cache = self._machines
        now, ready_at, draining, busy = engine.now, engine.ready_at, engine.draining, engine.busy
        out = []
        for m in engine.alive:
            state = "draining" if draining[m] else ("booting" if ready_at[m] > now else "ready")
            work = busy[m] if self.machine_work else 0
            key = (m, state, work)
            machine = cache.get(key)
            if machine is None:
                if len(cache) > 100_000:
                    cache.clear()
                machine = Machine(id=str(m), pool=self.pool.name, state=_STATES[state], size=self.pool.size[0],
                                  region=self.pool.region[0] if self.pool.region else "sim1",
                                  price_hourly_usd=engine.prices[m], created_at=engine.created[m],
                                  ready_at=ready_at[m], work_left=float(work))
                cache[key] = machine
            out.append(machine)
        return PoolView(name=self.pool.name, machines=tuple(out), headroom=engine.headroom(),
                        launch_price_hourly_usd=self.price,
                        machine_work="simulated per-machine work" if self.machine_work else None)

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:
        view = self._view(engine)
        readings = readings_for(self.pool, seen)
        plan = self.decide(self.config, Fleet({self.pool.name: view}), {self.pool.name: readings},
                           self._history(now), now, settings=self.settings)
        self._previous = PreviousTick(now, view.ready, readings)  # as the decisions table keeps it
        pool_plan = plan.pool(self.pool.name)
        self._recs.append((now, pool_plan.recommendation))
        if pool_plan.demand_sample is not None:
            self._demand.append((now, pool_plan.demand_sample))
        self._apply(now, engine, pool_plan)

    def _history(self, now: float) -> History:
        """What the decisions table would hand back: the window's recommendations and demand."""
        while self._demand and now - self._demand[0][0] > self._window:
            self._demand.popleft()
        while self._recs and now - self._recs[0][0] > self._window:
            self._recs.popleft()
        return History({self.pool.name: PoolHistory(self._last_up, self._last_down, tuple(self._recs),
                                                    tuple(self._demand), self._previous)})

    def _apply(self, now: float, engine: Engine, pool_plan: PoolPlan) -> None:
        for action in pool_plan.actions:
            if isinstance(action, CreateAction):
                engine.create(action.count, action.price_hourly_usd or self.price)
                self._last_up = now
            elif isinstance(action, UndrainAction):
                engine.undrain([int(i) for i in action.machine_ids])
            elif isinstance(action, DrainAction):
                # no new work, gone when its work is done: a drain behind a load balancer honouring it
                engine.destroy([int(i) for i in action.machine_ids])
                self._last_down = now
            elif isinstance(action, DestroyAction):
                # terminated now, as `fleet run` terminates it: work it still serves is cut off
                engine.cut([int(i) for i in action.machine_ids])
                self._last_down = now


@dataclass
class StaticPolicy:
    machines: int
    name: str = "static"
    tick_s: float | None = None

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:  # never called
        return None


@dataclass
class ReactivePolicy:
    """KEDA-style queue scaler."""

    limits: Limits
    target: float  # queue items per machine
    tick_s: float
    cooldown_s: float = 300.0
    name: str = "reactive"
    _last_scale: float = -math.inf

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:
        current = sum(1 for m in engine.alive if not engine.draining[m])
        desired = math.ceil((seen.waiting + seen.busy) / self.target - 1e-9)
        if desired < current and now - self._last_scale < self.cooldown_s:
            desired = current
        desired = self.limits.clamp(desired, current, engine)
        if desired != current:
            scale_to(engine, desired)
            self._last_scale = now


@dataclass
class HpaPolicy:
    """Kubernetes HPA on GPU utilization."""

    limits: Limits
    slots: int
    tick_s: float
    target: float = 0.7
    tolerance: float = 0.1
    stabilization_s: float = 300.0
    name: str = "hpa"
    _recs: deque[tuple[float, int]] = field(default_factory=deque)
    _ups: deque[tuple[float, int]] = field(default_factory=deque)  # (time, count before) of scale-ups

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:
        current = sum(1 for m in engine.alive if not engine.draining[m])
        if seen.ready == 0:
            desired = max(current, 1)  # nothing to measure: HPA holds (minReplicas 1)
        else:
            util = seen.busy / (seen.ready * self.slots)
            ratio = util / self.target
            desired = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(seen.ready * ratio - 1e-9)
        desired = max(desired, 1)
        while self._recs and now - self._recs[0][0] >= self.stabilization_s:
            self._recs.popleft()
        self._recs.append((now, desired))
        if desired < current:
            desired = min(current, max(r for _, r in self._recs))
        # scale-up limit: at most max(100%, 4) more than the count 15 s ago
        while self._ups and now - self._ups[0][0] >= 15.0:
            self._ups.popleft()
        base = self._ups[0][1] if self._ups else current
        desired = min(desired, base + max(base, 4))
        desired = self.limits.clamp(desired, current, engine)
        if desired > current:
            self._ups.append((now, current))
        if desired != current:
            scale_to(engine, desired)
