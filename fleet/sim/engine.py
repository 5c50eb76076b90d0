"""The discrete-event simulator: one pool, a FIFO queue, machines with slots, a virtual clock.

Requests arrive from the trace, start on a free slot of a ready machine (the oldest
machine first, which packs work and leaves the newest idle for release), and hold
the slot for their service time.  Every `tick_s` the policy reads the queue's
signals as they were `lag_s` ago and may create or destroy machines.

Machines are modelled here rather than through providers/simulated.py's
`SimulatedCloud`: a tick of a 23-day replay must cost microseconds, and the cloud
builds `ProviderInstance` values with datetimes on every listing.  Billing is the
cloud's own rule, `SimulatedCloud.billing` (providers.base.BillingRule: create to
destroy, boot included, per second, 60 s minimum), applied to the same lifetimes;
tests/test_sim_engine.py replays a run's lifetimes through `SimulatedCloud` and
checks the bills agree.

A machine asked to drain (`destroy`) stops taking work and is destroyed when its last
request ends, so none of its requests is cut short: what a drain behind a load balancer, or
Kubernetes' graceful termination for the baselines, does.  A machine `cut` is destroyed at
once, as `fleet run` terminates one: its requests are lost and retried (back of the queue,
served from scratch); their wait still counts from their first arrival, the `queue_wait`
signal from the retry, as the server sees it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fleet.sim.trace import Trace
from providers.simulated import SimulatedCloud

BILLING = SimulatedCloud.billing

_COMPLETE, _READY = 0, 1


@dataclass(frozen=True)
class Snapshot:
    """The queue as the signals saw it: `waiting` queued, `busy` slots in service."""

    at: float
    waiting: int
    busy: int
    ready: int  # ready machines (serving, not draining)
    # the longest queue wait of the requests that started since the previous read (0 when
    # none did): what max-over-a-tick of vLLM's `vllm:request_queue_time_seconds` or Triton's
    # `nv_inference_queue_duration_us` says.  Like those, a request is counted when it
    # starts, so work still waiting is not in it.
    wait_max: float = 0.0


class SimPolicy(Protocol):
    """Who decides in a replay (fleet/sim/policies.py): once a tick, `tick_s` None means never
    (a static fleet).  Not `fleet.controller.Controller`: that one runs the service's tick."""

    @property
    def name(self) -> str: ...

    @property
    def tick_s(self) -> float | None: ...

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None: ...


@dataclass
class Series:
    """One row a tick, for the plot: demand in slots, machines ready and booting, worst wait."""

    t: list[float] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    booting: list[int] = field(default_factory=list)


@dataclass
class RunResult:
    policy: str
    waits: np.ndarray  # per request: start - arrival (inf when never served)
    created: list[float]
    gone: list[float]  # destroy time of each machine (the run's end for those still alive)
    prices: list[float]
    end_s: float
    series: Series
    violations: int
    notes: list[str] = field(default_factory=list)
    # requests cut off by a machine destroyed while serving them (retried), once per cut
    cut_requests: list[int] = field(default_factory=list)

    def machine_cost(self, i: int) -> float:
        return BILLING.cost(self.gone[i] - self.created[i], self.prices[i])

    def _inside(self, start: float, end: float) -> list[float]:
        """Each machine's time inside [start, end]."""
        return [max(0.0, min(g, end) - max(c, start)) for c, g in zip(self.created, self.gone, strict=True)]

    def machine_seconds_between(self, start: float, end: float) -> float:
        """Machine time inside [start, end], summed over the machines."""
        return sum(self._inside(start, end))

    def cost_between(self, start: float, end: float) -> float:
        """Machine time inside [start, end] at its price (pro rata: for judging part of a trace)."""
        return sum(s * p for s, p in zip(self._inside(start, end), self.prices, strict=True)) / 3600.0

    @property
    def cost_usd(self) -> float:
        return sum(self.machine_cost(i) for i in range(len(self.created)))


@dataclass(frozen=True)
class EngineSettings:
    slots: int
    boot_s: float
    price_hourly_usd: float
    boot_jitter_s: float = 0.0
    lag_s: float = 0.0
    seed: int = 0
    initial_ready: int = 0  # machines ready at t = 0 (a static fleet, a pool's min)
    quota: int | None = None  # machines the simulated cloud admits in total


class Engine:
    def __init__(self, trace: Trace, settings: EngineSettings):
        self.s = settings
        self.slots = settings.slots
        self.arrival: list[float] = trace.arrival_s.tolist()
        self.service: list[float] = trace.service_s.tolist()
        self.waits = np.full(len(self.arrival), math.inf)
        self.next_i = 0
        self.queue: deque[int] = deque()
        self.heap: list[tuple[float, int, int, int]] = []  # (time, kind, machine, request or -1)
        # machines, by index
        self.created: list[float] = []
        self.ready_at: list[float] = []
        self.gone_at: list[float | None] = []
        self.busy: list[int] = []
        self.running: list[set[int]] = []  # the requests each machine serves
        self.retried_at: dict[int, float] = {}  # requests cut off and queued again, when
        self.cut_requests: list[int] = []  # each request cut off, once per cut
        self.draining: list[bool] = []
        self.prices: list[float] = []
        self.alive: dict[int, None] = {}  # insertion-ordered set of live machine indices
        self.free: list[int] = []  # heap of ready machines that may have a free slot
        self.in_free: list[bool] = []
        self.busy_total = 0
        self.ready_count = 0
        self.last_finish = 0.0
        self.wait_max = 0.0  # the longest wait of the requests started since `take_wait_max`
        self.now = 0.0
        self.violations = 0
        self._rng = random.Random(settings.seed)
        for _ in range(settings.initial_ready):
            self._new_machine(0.0, 0.0, settings.price_hourly_usd)
            self._on_ready(0.0, len(self.created) - 1)

    # ------------------------------------------------------------ machines (the policies' API)

    def booting(self) -> int:
        return sum(1 for m in self.alive if self.ready_at[m] > self.now)

    def live_count(self) -> int:
        return len(self.alive)

    def headroom(self) -> int | None:
        return None if self.s.quota is None else max(0, self.s.quota - len(self.alive))

    def create(self, count: int, price: float | None = None) -> int:
        """Launch up to `count` machines now (fewer when the quota says so); returns how many."""
        room = self.headroom()
        if room is not None and count > room:
            self.violations += 1  # a policy asked past the quota; the cloud launches what it admits
            count = room
        jitter = self.s.boot_jitter_s
        for _ in range(count):
            boot = self.s.boot_s + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
            m = self._new_machine(self.now, self.now + max(0.0, boot), price or self.s.price_hourly_usd)
            heapq.heappush(self.heap, (self.ready_at[m], _READY, m, -1))
        return count

    def destroy(self, machines: list[int]) -> None:
        now = self.now
        for m in machines:
            if self.gone_at[m] is not None or self.draining[m]:
                continue
            if self.ready_at[m] > now:
                self._gone(m, now)  # still booting: its ready event is skipped
            else:
                self.ready_count -= 1
                if self.busy[m] == 0:
                    self._gone(m, now)
                else:
                    self.draining[m] = True

    def cut(self, machines: list[int]) -> None:
        """Destroy now, whatever the machines serve: their requests are retried from the queue."""
        now = self.now
        for m in machines:
            if self.gone_at[m] is not None:
                continue
            if self.ready_at[m] <= now and not self.draining[m]:
                self.ready_count -= 1
            lost = sorted(self.running[m])
            self.running[m].clear()  # their completion events find nothing and are skipped
            self.busy_total -= self.busy[m]
            self.busy[m] = 0
            self._gone(m, now)
            self.cut_requests.extend(lost)
            for r in lost:
                self.waits[r] = math.inf
                self.retried_at[r] = now
            self.queue.extend(lost)
        while self.queue and (free := self._free_machine()) is not None:
            self._start(self.queue.popleft(), free, now)

    def undrain(self, machines: list[int]) -> None:
        """Take draining machines back: ready again, and serving the queue."""
        for m in machines:
            if self.gone_at[m] is None and self.draining[m]:
                self.draining[m] = False
                self._on_ready(self.now, m)

    def state_of(self, m: int) -> str:
        if self.draining[m]:
            return "draining"
        return "booting" if self.ready_at[m] > self.now else "ready"

    def _new_machine(self, created: float, ready_at: float, price: float) -> int:
        self.created.append(created)
        self.ready_at.append(ready_at)
        self.gone_at.append(None)
        self.busy.append(0)
        self.running.append(set())
        self.draining.append(False)
        self.in_free.append(False)
        self.prices.append(price)
        m = len(self.created) - 1
        self.alive[m] = None
        return m

    def _gone(self, m: int, t: float) -> None:
        self.gone_at[m] = t
        del self.alive[m]

    # ------------------------------------------------------------ requests

    def _free_machine(self) -> int | None:
        free, busy, slots = self.free, self.busy, self.slots
        while free:
            m = free[0]
            if busy[m] < slots and not self.draining[m] and self.gone_at[m] is None:
                return m
            heapq.heappop(free)
            self.in_free[m] = False
        return None

    def _start(self, r: int, m: int, t: float) -> None:
        self.busy[m] += 1
        self.busy_total += 1
        self.running[m].add(r)
        self.waits[r] = t - self.arrival[r]
        # what the server measures: a retried request waited since its retry
        retried = self.retried_at.pop(r, None) if self.retried_at else None
        wait = self.waits[r] if retried is None else t - retried
        if wait > self.wait_max:
            self.wait_max = wait
        heapq.heappush(self.heap, (t + self.service[r], _COMPLETE, m, r))

    def _on_ready(self, t: float, m: int) -> None:
        if self.gone_at[m] is not None:
            return
        self.ready_count += 1
        queue = self.queue
        while queue and self.busy[m] < self.slots:
            self._start(queue.popleft(), m, t)
        if self.busy[m] < self.slots and not self.in_free[m]:
            heapq.heappush(self.free, m)
            self.in_free[m] = True

    def _on_complete(self, t: float, m: int, r: int) -> None:
        running = self.running[m]
        if r not in running:
            return  # cut off before it ended: retried elsewhere
        running.remove(r)
        self.busy[m] -= 1
        self.busy_total -= 1
        self.last_finish = t
        if self.draining[m]:
            if self.busy[m] == 0:
                self._gone(m, t)
            return
        if self.queue:
            self._start(self.queue.popleft(), m, t)
        elif not self.in_free[m]:
            heapq.heappush(self.free, m)
            self.in_free[m] = True

    def advance(self, until: float) -> None:
        """Process every event at or before `until` (completions and boots before arrivals at a tie)."""
        arrival, heap, n = self.arrival, self.heap, len(self.arrival)
        i = self.next_i
        pop = heapq.heappop
        while True:
            ta = arrival[i] if i < n else math.inf
            th = heap[0][0] if heap else math.inf
            if th <= ta:
                if th > until or th == math.inf:
                    break
                t, kind, m, r = pop(heap)
                self.now = t
                if kind == _COMPLETE:
                    self._on_complete(t, m, r)
                else:
                    self._on_ready(t, m)
            else:
                if ta > until:
                    break
                self.now = ta
                free = self._free_machine()
                if free is None:
                    self.queue.append(i)
                else:
                    self._start(i, free, ta)
                    if self.busy[free] >= self.slots:
                        heapq.heappop(self.free)
                        self.in_free[free] = False
                i += 1
        self.next_i = i
        if until != math.inf and until > self.now:
            self.now = until

    def take_wait_max(self) -> float:
        """The longest wait of the requests started since the previous call, and reset it."""
        wait, self.wait_max = self.wait_max, 0.0
        return wait

    def snapshot(self) -> Snapshot:
        """The queue now (the wait window is left alone: only the tick loop's reads reset it)."""
        return Snapshot(self.now, len(self.queue), self.busy_total, self.ready_count, self.wait_max)

    @property
    def done(self) -> bool:
        return self.next_i >= len(self.arrival) and not self.queue and self.busy_total == 0


def run(trace: Trace, settings: EngineSettings, policy: SimPolicy,
        progress: Callable[[float], None] | None = None,
        check: Callable[[Engine], int] | None = None) -> RunResult:
    """Replay `trace` under `policy`; `check` counts cap violations after each tick."""
    engine = Engine(trace, settings)
    series = Series()
    tick = policy.tick_s
    if tick is None:
        engine.advance(math.inf)
    else:
        n = len(engine.arrival)
        lag = settings.lag_s
        samples: deque[Snapshot] = deque()  # what the signals read, lag_s before each tick
        j = 0
        k = 0
        stranded = 0  # ticks with work left but no machine: a pool capped at zero never ends
        while True:
            t = k * tick
            while j * tick - lag <= t:
                at = j * tick - lag
                engine.advance(at)
                samples.append(Snapshot(at, len(engine.queue), engine.busy_total, engine.ready_count,
                                        engine.take_wait_max()))
                j += 1
            engine.advance(t)
            seen = samples.popleft()
            if engine.done:
                break
            series.t.append(t)
            series.waiting.append(len(engine.queue))
            series.busy.append(engine.busy_total)
            series.ready.append(engine.ready_count)
            series.booting.append(engine.booting())
            policy.tick(t, engine, seen)
            if check is not None:
                engine.violations += check(engine)
            stranded = stranded + 1 if (engine.next_i >= n and not engine.alive) else 0
            if stranded > 1000:
                break
            k += 1
            if progress is not None and k % 2000 == 0:
                progress(engine.next_i / n)
    end = engine.last_finish if engine.done else engine.now
    gone = [g if g is not None else end for g in engine.gone_at]
    return RunResult(policy.name, engine.waits, engine.created, gone, engine.prices, end, series,
                     engine.violations, cut_requests=engine.cut_requests)
