"""The latency-aware policy: size a pool so work starts within `latency_budget_s`.

The user states the budget and `boot_seconds`; nothing else is tuned per pool.  A machine
asked for now serves only after a boot, so the pool must already hold what demand may
rise to within one boot.  Per tick, in machines (`slots_per_machine` slots each):

  demand    x = (queued + running) / slots, from the `queue_depth` reading (from
            `gpu_utilization` when the queue is unread).  The readings carry no per-item
            time, so a queue says capacity is short but not by how much: queued work counts
            at most backlog_factor x the busy machines (+ backlog_slack), a bound that rises
            as capacity arrives, instead of one machine per queued item, which over-launches
            in a burst.  A pool that also reads `queue_wait` (seconds the work started in the
            last tick waited, as vLLM's `vllm:request_queue_time_seconds` or Triton's
            `nv_inference_queue_duration_us` say) uses the budget's queueing slack: while
            work starts within wait_clears x the budget, the queue clears in time and only
            running work counts (a wait of 0 with work queued is no evidence: nothing may
            have started).  Pools without the signal are unchanged.
  level     the demand seen on two reads in a row (a burst the ready slots clear within a
            tick is no reason to boot), averaged over smooth_s.  `x` is the
            `demand_sample` the controller stores and hands back as `PoolHistory.demand`.
  hold      the highest level of the last hold_boots boot times: capacity is released
            only after it has been unneeded that long (ski rental, the rule the clairvoyant
            bound follows), so bursts do not pay boot after boot.
  headroom  the larger of square-root staffing (noise: BETA x sqrt(busy slots) idle slots,
            busy = the hold, or the work running now when larger and work is late) and
            the rise_quantile of the rises, over the recorded history, of the level above
            such a hold within one boot time (what the hold alone would have missed; only
            windows with a rise count, so a sparse trace's idle hours do not dilute them;
            measured on a grid of at most 60 samples aligned to absolute time).

  desired = ceil(hold + headroom): the rises were measured above the hold, so they go on it.
  While queued work is late (queued, and the `queue_wait` reading does not show it clearing
  within wait_clears x the budget; without that signal, any queued work), the work running now
  holds its slots whatever the averages say and needs only its own noise on top:
  desired = ceil(max(hold + headroom, running + noise)).  Adding the rises to a momentary peak
  of running work made the target jump tick to tick, releasing machines mid-burst; counting the
  running work with nothing late let one busy read lift the target over an integer and back,
  and each such flap released an idle ready machine and bought a booting one (a boot paid for
  nothing, one ready machine fewer).
  A pool with `queue_wait` also sizes for a surge while the work starting waited past the
  budget (two reads in a row): from how fast the queue grew since the previous tick's readings it estimates the
  arrival rate against what the busy machines complete (`surge`, below), and asks at once for
  the machines the arrivals need plus those that clear the backlog within a boot.  The bounded
  backlog count alone grows capacity by about backlog_factor per boot: a 40x step would take
  hours.  The surge is also the tick's demand sample, so the hold keeps it and the rises learn it.
  While queued work is late nothing is released (a release would cut the capacity it waits for),
  and a release leaves ready at least the work running now plus its noise (booting machines
  serve nobody for a boot; a pool without per-machine work cannot tell which machine is idle).
  A scale-down releases only idle machines that have been
  ready a hold window (one just bought, booting or ready, is kept: decide removes idle
  ready machines first for a latency pool), and none before the history covers
  evidence_boots boot times (a cold start or a restart without records knows nothing is idle).

Each stage is a function and says what it did in its own Reason: `latency_demand` (and
`latency_queue_clears` when queued work is left out), `latency_hold`, `latency_headroom`,
`latency_surge` (when the surge sets the size), and one of `latency_release_history`,
`latency_release_late`, `latency_release_idle` when a release rule keeps machines
(`latency_no_signal` when nothing can be read).

Pure: every input is an argument.  The constants (beta, smooth_s, ...) are a frozen
`LatencySettings` (fleet/policy/settings.py) passed in; `history_window_s(pool)` says how much
history it reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

import numpy as np

from fleet.config import PoolConfig
from fleet.model import (
    CAPACITY_STATES,
    MachineState,
    PoolHistory,
    PoolView,
    PreviousTick,
    Reason,
    SignalReading,
)
from fleet.policy.settings import DEFAULT, LatencySettings

_EPS = 1e-9


@dataclass(frozen=True)
class LatencyDecision:
    desired: int
    reasons: tuple[Reason, ...]
    demand_sample: float | None
    hold: float = 0.0
    headroom: float = 0.0


def history_window_s(pool: PoolConfig, settings: LatencySettings = DEFAULT) -> float:
    """How far back `PoolHistory.demand` should reach for this pool."""
    return max(3600.0, settings.history_boots * pool.boot_seconds)


def hold_seconds(pool: PoolConfig, settings: LatencySettings = DEFAULT) -> float:
    """How long capacity is kept after it was last needed; a machine ready for less was just bought."""
    return settings.hold_boots * pool.boot_seconds


def reads_previous_tick(pool: PoolConfig, settings: LatencySettings = DEFAULT) -> bool:
    """Whether `recommend` uses `PoolHistory.previous` for this pool (the surge reads a queue_wait)."""
    return settings.surge and pool.latency_budget_s is not None and any(s.kind == "queue_wait" for s in pool.signals)


def _reading(readings: Sequence[SignalReading], kind: str) -> float | None:
    for r in readings:
        if r.kind == kind and r.value is not None:
            return r.value
    return None


def demand(pool: PoolConfig, view: PoolView, readings: Sequence[SignalReading],
           ready: int | None = None, settings: LatencySettings = DEFAULT) -> float | None:
    """Work in the pool now, in machines (queued work bounded by the busy machines, see the
    module doc); None when no reading says.  `ready` is `view.ready`, when the caller has it."""
    busy = busy_machines(pool, readings, view.ready if ready is None else ready)
    queue = _reading(readings, "queue_depth")
    if queue is None or busy is None:
        return busy
    x = max(0.0, queue) / pool.slots_per_machine
    return min(x, settings.backlog_factor * busy + settings.backlog_slack)


def level_series(raw: np.ndarray, k: int) -> np.ndarray:
    """Demand seen on two reads in a row, then a moving mean over k samples (the first k
    samples, without k before them, are taken as they are)."""
    values = raw.copy()
    np.minimum(values[1:], raw[:-1], out=values[1:])
    if k <= 1 or len(values) <= k:
        return values
    c = values.cumsum()
    values[k:] = (c[k:] - c[:-k]) / k  # the first k keep their own value
    return values


def window_max(values: np.ndarray, w: int) -> np.ndarray:
    """out[i] = max(values[i : i + w]) for every complete window, in O(n log w) numpy steps."""
    out, p = values, 1
    while 2 * p <= w:  # out[i] = max(values[i : i + 2p])
        out = np.maximum(out[:-p], out[p:])
        p *= 2
    if p < w:  # two overlapping windows of p cover one of w
        out = np.maximum(out[: len(values) - w + 1], out[w - p:])
    return out


def excess_quantile(values: np.ndarray, hold_steps: int, ahead_steps: int, q: float,
                    positive_only: bool = True) -> float:
    """The q-quantile, over the samples, of max(values[i+1 .. i+ahead_steps]) minus the hold
    max(values[i-hold_steps+1 .. i]): how far demand rose above what a hold kept.  0 with
    too little history."""
    n = len(values)
    m = n - hold_steps - ahead_steps + 1  # samples i with both windows complete
    if m <= 0:
        return 0.0
    behind = window_max(values[: hold_steps + m - 1], hold_steps)
    ahead = window_max(values[hold_steps:], ahead_steps)[:m]
    excess = ahead - behind
    if positive_only:
        excess = excess[excess > 0]
        m = len(excess)
        if m == 0:
            return 0.0
    rank = min(m - 1, max(0, math.ceil(q * m) - 1))  # the nearest-rank quantile
    return max(0.0, float(np.partition(excess, rank)[rank]))


def queue_clears(pool: PoolConfig, wait: float | None, settings: LatencySettings = DEFAULT) -> bool:
    """Whether the `queue_wait` reading shows queued work starting well within the budget: some
    work started last tick (a wait of exactly 0 with work queued may be a stall: no evidence)
    and it waited at most wait_clears x the budget.  False without a reading."""
    budget = pool.latency_budget_s
    return wait is not None and budget is not None and 0.0 < wait <= settings.wait_clears * budget


def busy_machines(pool: PoolConfig, readings: Sequence[SignalReading], ready: int) -> float | None:
    """Machines' worth of work running: utilization x ready, or the queue up to the ready slots."""
    util = _reading(readings, "gpu_utilization")
    if util is not None:
        return max(0.0, util) * ready
    queue = _reading(readings, "queue_depth")
    return None if queue is None else min(max(0.0, queue) / pool.slots_per_machine, ready)


def surge(pool: PoolConfig, readings: Sequence[SignalReading], ready: int, previous: PreviousTick | None,
          now: float, settings: LatencySettings = DEFAULT) -> float | None:
    """Machines the work arriving now needs, plus those that clear the backlog within a boot,
    while queued work is late (`queue_wait` past the budget on this read and the previous one);
    None when the readings cannot say.

    First in, first out: the work waiting now arrived within the last `wait` seconds, so it
    arrives at `waiting / wait` items a second.  The queue (waiting + running) grows at arrivals
    minus completions, so completions are arrivals minus its growth since the previous reading,
    served by the machines busy then (the fewer of then and now: capacity that came up between
    the reads served part of the interval only).  Arrivals need `busy x arrivals / completions`
    machines; the backlog, `wait` seconds of arrivals, cleared within one boot needs `wait / boot`
    times as many again.  Completions count at least 1/surge_max of arrivals, so one pair of
    reads multiplies the busy machines at most surge_max x (1 + wait / boot) times."""
    budget = pool.latency_budget_s
    queue, wait = _reading(readings, "queue_depth"), _reading(readings, "queue_wait")
    if queue is None or wait is None or budget is None or wait <= budget or previous is None:
        return None
    elapsed = now - previous.at
    before = _reading(previous.readings, "queue_depth")
    busy_now = busy_machines(pool, readings, ready)
    busy_then = busy_machines(pool, previous.readings, previous.ready)
    if before is None or busy_now is None or busy_then is None or not 0 < elapsed <= pool.boot_seconds:
        return None
    if not (_reading(previous.readings, "queue_wait") or 0.0) > budget:
        return None  # late on one read only: the next read confirms it (one glitch buys nothing)
    busy = min(busy_now, busy_then)
    waiting = queue - busy_now * pool.slots_per_machine
    if busy <= 0 or waiting <= 0:
        return None
    arrivals = waiting / wait
    completions = max(arrivals - (queue - before) / elapsed, arrivals / settings.surge_max)
    return busy / completions * (arrivals + waiting / pool.boot_seconds)


# ---------------------------------------------------------------- the stages, in the order they run


@dataclass(frozen=True)
class Work:
    """Stage 1: the work in the pool now, in machines."""

    demand: float  # x: running work, plus the queued work that will not clear within the budget
    running: float  # work already running: it holds its slots now, whatever the averages say
    cleared: float = 0.0  # queued work left out: the `queue_wait` reading shows it clearing in time
    wait: float | None = None

    @property
    def late(self) -> bool:
        """Queued work that will not clear within the budget (the work running now counts too)."""
        return self.demand > self.running

    def reasons(self) -> tuple[Reason, ...]:
        out: tuple[Reason, ...] = (Reason("latency_demand", f"demand {self.demand:.2f} machines, "
                                                            f"running {self.running:.2f}"),)
        if self.cleared:
            out += (Reason("latency_queue_clears", f"{self.cleared:.2f} queued not counted (queue wait "
                                                   f"{self.wait:g}s): it clears within the budget"),)
        return out


def work_now(pool: PoolConfig, view: PoolView, readings: Sequence[SignalReading], ready: int,
             settings: LatencySettings = DEFAULT) -> Work | None:
    """Demand, less the queue that clears within the budget; None when no reading says."""
    x = demand(pool, view, readings, ready, settings)
    if x is None:
        return None
    util = _reading(readings, "gpu_utilization")
    running = min(x, ready) if util is None else min(x, max(0.0, util) * ready)
    wait = _reading(readings, "queue_wait")
    if x > running and queue_clears(pool, wait, settings):
        return Work(running, running, x - running, wait)  # the queue needs no machine of its own
    return Work(x, running, 0.0, wait)


@dataclass(frozen=True)
class Level:
    """Stage 2: the level of demand and the hold, from the recorded history and this tick."""

    samples: tuple[tuple[float, float], ...]  # the history inside the window, oldest first
    dt: float  # the mean time between samples (0 with fewer than two)
    k: int  # samples averaged into the level
    level: float
    hold: float  # the highest level of the hold window, now included
    hold_s: float

    def reason(self) -> Reason:
        return Reason("latency_hold", f"level {self.level:.2f}, hold {self.hold:.2f} (max of the last "
                                      f"{self.hold_s:g}s)")


def history_in_window(samples: tuple[tuple[float, float], ...], now: float,
                      window: float) -> tuple[tuple[float, float], ...]:
    if samples and (samples[0][0] < now - window or samples[-1][0] >= now):
        samples = tuple(p for p in samples if now - window <= p[0] < now)
    return samples


def level_and_hold(samples: tuple[tuple[float, float], ...], x: float, now: float, hold_s: float,
                   settings: LatencySettings = DEFAULT) -> Level:
    n = len(samples)
    dt = max((samples[-1][0] - samples[0][0]) / (n - 1), 1e-3) if n >= 2 else 0.0
    k = max(1, round(settings.smooth_s / dt)) if dt else 1
    back = sum(1 for t, _ in samples[-int(hold_s / dt) - 2:] if t >= now - hold_s) if dt else 0
    # levels over the hold window (and k samples before it, so each mean is whole)
    recent = samples[max(0, n - back - k):]
    raw = np.fromiter(chain(map(itemgetter(1), recent), (x,)), float, len(recent) + 1)
    levels = level_series(raw, k)
    hold = float(levels[len(levels) - 1 - back:].max())  # the hold window, now included
    return Level(samples, dt, k, float(levels[-1]), hold, hold_s)


@dataclass(frozen=True)
class Headroom:
    """Stage 3: what goes on the hold: square-root staffing against the quantile of past rises."""

    base: float  # the busy machines the noise is counted on: the hold (or the work running, when late)
    noise: float
    excess: float
    quantile: float

    @property
    def headroom(self) -> float:
        return max(self.noise, self.excess)

    def reason(self, sized: int, on_running: bool) -> Reason:
        on = " on the work running (queued work is late)" if on_running else " on the hold"
        return Reason("latency_headroom", f"headroom {self.headroom:.2f} (sqrt staffing {self.noise:.2f}, "
                                          f"q{self.quantile:g} of rises above the hold within a boot "
                                          f"{self.excess:.2f}){on} -> {sized}")


def rises(level: Level, x: float, boot: float, settings: LatencySettings = DEFAULT) -> float:
    """The quantile of past rises of the level above a hold within one boot (0 without history)."""
    samples, dt = level.samples, level.dt
    n = len(samples)
    if n < 2:
        return 0.0
    # rises, on a grid of at most max_samples (a coarser grid for long histories: same rises)
    step = max(1, math.ceil(n / settings.max_samples))
    # the grid is aligned to absolute time, so the same samples are picked tick after tick
    picked = samples[(n - 1 - round(samples[-1][0] / dt)) % step::step]
    coarse = np.fromiter(chain(map(itemgetter(1), picked), (x,)), float, len(picked) + 1)
    coarse = level_series(coarse, max(1, round(level.k / step)))
    coarse[-1] = level.level
    hold_steps = max(1, round(level.hold_s / (dt * step)) + 1)
    ahead_steps = max(1, math.ceil((boot + dt) / (dt * step) - _EPS))
    return excess_quantile(coarse, hold_steps, ahead_steps, settings.rise_quantile, settings.positive_only)


def headroom(pool: PoolConfig, level: Level, work: Work, settings: LatencySettings = DEFAULT) -> Headroom:
    base = max(level.hold, work.running) if work.late else level.hold
    slots = pool.slots_per_machine
    noise = settings.beta * math.sqrt(base * slots) / slots  # square-root staffing, counted in slots
    return Headroom(base, noise, rises(level, work.demand, pool.boot_seconds, settings), settings.rise_quantile)


def sized(level: Level, room: Headroom, work: Work) -> float:
    """The rises were measured above the hold, so they go on it; work running now while queued
    work is late needs only its own noise on top."""
    if work.late:
        return max(level.hold + room.headroom, work.running + room.noise)
    return level.hold + room.headroom


def release(pool: PoolConfig, view: PoolView, desired: int, current: int, ready: int, now: float,
            work: Work, level: Level, noise: float, settings: LatencySettings = DEFAULT) -> tuple[int, Reason | None]:
    """Stage 5: how much of a scale-down may go now (short history, late work, ski rental)."""
    if desired >= current:
        return desired, None
    evidence = settings.evidence_boots * pool.boot_seconds
    if not level.samples or level.samples[0][0] > now - evidence:
        return current, Reason("latency_release_history", f"history shorter than {evidence:g}s: not releasing")
    if work.late:
        # a release now would cut the capacity the late work is waiting for
        return current, Reason("latency_release_late", "queued work is late: not releasing")
    return ski_rental(pool, view, desired, current, ready, now, work.running + noise, level.hold_s)


def ski_rental(pool: PoolConfig, view: PoolView, desired: int, current: int, ready: int, now: float,
               keep: float, hold_s: float) -> tuple[int, Reason | None]:
    """Ski rental per machine: only an idle machine that has been ready a hold window is
    released; one just bought (booting, or ready moments ago) is kept (decide then removes
    idle ready machines before booting ones: fleet/policy/removal.py).  A pool that drains
    busy machines releases them too: decide drains instead of cutting.  The ready machines
    left still hold `keep` (the work running now and its noise): booting ones serve nobody for
    a boot, and a pool that cannot see each machine's work may cut a busy one."""
    boot = pool.boot_seconds
    drains = pool.machine_work is not None and pool.machine_work.drain_timeout_s is not None
    releasable = sum(
        1 for m in view.machines if m.state is MachineState.READY and (m.work_left <= 0 or drains)
        and (m.ready_at if m.ready_at is not None else m.created_at + boot) <= now - hold_s)
    keep_ready = math.ceil(keep - _EPS)
    spare = max(0, ready - keep_ready)
    if current - desired <= min(releasable, spare):
        return desired, None
    kept = f", {keep_ready} kept ready for the work running and its noise" if spare < releasable else ""
    return current - min(releasable, spare), Reason(
        "latency_release_idle", f"{releasable} machine(s) {'ready' if drains else 'idle and ready'} for "
                                f"{hold_s:g}s{kept}: releasing only {min(releasable, spare)}")


def _capacity(view: PoolView) -> tuple[int, int]:
    """view.ready and view.capacity, in one pass."""
    ready = current = 0
    for m in view.machines:
        if m.state in CAPACITY_STATES:
            current += 1
            ready += m.state is MachineState.READY
    return ready, current


def recommend(pool: PoolConfig, view: PoolView, readings: Sequence[SignalReading], history: PoolHistory,
              now: float, settings: LatencySettings = DEFAULT) -> LatencyDecision:
    """The stages in order: the work now, the level and hold, the headroom, the surge, the release."""
    ready, current = _capacity(view)
    work = work_now(pool, view, readings, ready, settings)
    if work is None:
        return LatencyDecision(current, (Reason("latency_no_signal",
                                                f"no queue or utilization reading: holding {current}"),), None)
    samples = history_in_window(history.demand, now, history_window_s(pool, settings))
    level = level_and_hold(samples, work.demand, now, hold_seconds(pool, settings), settings)
    room = headroom(pool, level, work, settings)
    need = sized(level, room, work)
    on_running = work.late and work.running + room.noise > level.hold + room.headroom
    reasons = (*work.reasons(), level.reason(), room.reason(max(0, math.ceil(need - _EPS)), on_running))
    surged = surge(pool, readings, ready, history.previous, now, settings) if work.late and settings.surge else None
    if surged is not None and surged > need:
        need = surged
        reasons += (Reason("latency_surge", f"surge {surged:.2f} (arrivals vs completions while queued work "
                                            f"is late) -> {max(0, math.ceil(need - _EPS))}"),)
    desired, held = release(pool, view, max(0, math.ceil(need - _EPS)), current, ready, now, work, level,
                            room.noise, settings)
    if held is not None:
        reasons += (held,)
    # a surge is recorded as the demand it is: what the hold keeps and what later rises are measured on
    x = work.demand
    return LatencyDecision(desired, reasons, x if surged is None else max(x, surged), room.base, room.headroom)
