"""The plain values that flow through a tick: Signals, Fleet, History, Plan.

They are frozen dataclasses with no behaviour beyond small derived views, so the
policy can be tested with literals and the simulator can build them cheaply.
Times are float seconds since the epoch (or since trace start, in simulation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from providers.base import (
    ErrorKind as ErrorKind,  # re-exported; the taxonomy is the providers' (they never import fleet)
)


class MachineState(StrEnum):
    """A machine's life (DESIGN.md, "A machine's life").  A row starts when the provider has
    answered (the intent before that lives in the `actions` table), so there is no planned or
    requested state; the legal moves are `LEGAL_MOVES` below, enforced by the store."""

    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


_S = MachineState
LEGAL_MOVES: Mapping[MachineState, frozenset[MachineState]] = {
    _S.BOOTING: frozenset({_S.READY, _S.DRAINING, _S.TERMINATING, _S.TERMINATED, _S.FAILED}),
    _S.READY: frozenset({_S.BOOTING, _S.DRAINING, _S.TERMINATING, _S.TERMINATED, _S.FAILED}),
    _S.DRAINING: frozenset({_S.READY, _S.TERMINATING, _S.TERMINATED, _S.FAILED}),  # READY: taken back
    _S.TERMINATING: frozenset({_S.TERMINATED}),
    _S.FAILED: frozenset({_S.TERMINATING, _S.TERMINATED}),
    # only when the provider lists it again: a listing that missed it for a while closed it
    _S.TERMINATED: frozenset({_S.BOOTING, _S.READY, _S.TERMINATING, _S.FAILED}),
}

# The state sets, each written once:
NOT_READY_STATES = frozenset({_S.BOOTING})  # bought, serving nobody yet
CAPACITY_STATES = frozenset({_S.BOOTING, _S.READY})  # serve or will serve
LIVE_STATES = frozenset(CAPACITY_STATES | {_S.DRAINING})  # running and ours to keep or end
BILLED_STATES = frozenset(LIVE_STATES | {_S.TERMINATING, _S.FAILED})  # FAILED: stopped, still billed
FINAL_STATES = frozenset({_S.TERMINATED})  # known to be gone
# A machine we created may take a moment to appear in an eventually consistent listing, and a
# listing may miss a machine for a moment: an unlisted machine (or a create whose answer was
# lost) still counts this long.
LISTING_GRACE_S = 60.0
# ... and one it then closed as vanished still counts toward the caps this long after: a listing
# that misses a machine for longer must not let its replacement pass the cap while it runs.
VANISHED_COUNTS_S = 600.0
# A machine still listed this long after its destroy request is asked again (the executor) and
# charged on (the recorder): a destroy the provider has not acted on by then failed or hangs.
DESTROY_RETRY_AFTER_S = 30.0

# what a planned destroy may still end (the re-check before the call)
DESTROYABLE_STATES = frozenset(LIVE_STATES | {_S.FAILED})


class ActionKind(StrEnum):
    """What an `actions` row asked the provider for."""

    CREATE = "create"
    DESTROY = "destroy"


class ActionStatus(StrEnum):
    """An `actions` row's life: PENDING (committed before the provider call), then one of the rest."""

    PENDING = "pending"
    DONE = "done"
    PARTIAL = "partial"  # the provider did part of it (fewer launched, some destroys failed)
    FAILED = "failed"  # the provider refused: `error_kind` says how
    ADOPTED = "adopted"  # the answer was lost; machines carrying its token were found
    LOST = "lost"  # the answer was lost and nothing carries its token


# the statuses of an action that happened (cooldowns count from these)
HAPPENED_STATUSES = frozenset({ActionStatus.DONE, ActionStatus.PARTIAL, ActionStatus.ADOPTED,
                               ActionStatus.PENDING})


class CreateOutcome(StrEnum):
    """What one planned create came to, for the executor's next step."""

    OK = "ok"
    BACKOFF = "backoff"  # earlier creates kept failing: not asked this tick
    FAILED = "failed"
    AUTH = "auth"  # the provider refused our credentials: nothing more for it this tick


@dataclass(frozen=True)
class SignalReading:
    """One signal's value this tick.  `value is None` means missing, never zero."""

    name: str
    kind: str
    value: float | None
    source: str  # human description, e.g. "redis list jobs@127.0.0.1:6379"
    age_s: float | None = None
    error: str | None = None  # why it is missing

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class Machine:
    id: str
    pool: str
    state: MachineState
    size: str
    region: str
    price_hourly_usd: float
    created_at: float
    ready_at: float | None = None
    work_left: float = 0.0  # items or seconds of work on it (inf: unknown); scale-down removes the least busy
    draining_since: float | None = None  # DRAINING: when its drain began
    # a create whose answer was lost (a crash, a lagging listing, another replica's call in
    # progress): capacity on its way, never a victim (it has no id to destroy yet)
    in_flight: bool = False


@dataclass(frozen=True)
class PoolView:
    """What the controller observed of one pool this tick."""

    name: str
    machines: tuple[Machine, ...] = ()
    listing_error: str | None = None  # the provider listing failed: hold the pool
    headroom: int | None = None  # machines the quota still admits; None = unknown
    headroom_note: str = ""
    launch_price_hourly_usd: float | None = None  # price of the next machine this pool would launch
    unpriced: tuple[str, ...] = ()  # the launch candidates whose price is unknown (launch_price is then None)
    provider_blocked: str | None = None  # e.g. an auth error: do not act on this provider
    # What the pool's per-machine work reading said (None: the pool has none).  With one, each
    # ready machine's `work_left` is its reading (inf when unread) and only idle ones are removed.
    machine_work: str | None = None
    # machines a listing stopped showing (closed as vanished lately, never asked to be destroyed):
    # not capacity, but they may still run, so their burn counts toward the caps for a while
    vanished_usd_per_hour: float = 0.0

    @property
    def ready(self) -> int:
        return sum(1 for m in self.machines if m.state is MachineState.READY)

    @property
    def booting(self) -> int:
        return sum(1 for m in self.machines if m.state in NOT_READY_STATES)

    @property
    def capacity(self) -> int:
        """Machines that serve or will serve: ready + booting (draining ones are on their way out)."""
        return self.ready + self.booting

    @property
    def burn_usd_per_hour(self) -> float:
        return sum(m.price_hourly_usd for m in self.machines if m.state in BILLED_STATES) + self.vanished_usd_per_hour

    @property
    def leaving_usd_per_hour(self) -> float:
        """The burn on its way out: machines being destroyed, and those a listing lost lately."""
        return sum(m.price_hourly_usd for m in self.machines
                   if m.state is MachineState.TERMINATING) + self.vanished_usd_per_hour

    @property
    def live_price_usd_per_hour(self) -> float | None:
        """The mean price of the machines that serve or will serve (what shedding one saves)."""
        prices = [m.price_hourly_usd for m in self.machines if m.state in CAPACITY_STATES and not m.in_flight]
        return sum(prices) / len(prices) if prices else None


@dataclass(frozen=True)
class Fleet:
    pools: Mapping[str, PoolView]
    # machines carrying this fleet's tag that no configured pool holds (a pool removed, renamed or
    # moved to another provider): no pool decides for them, but they are billed, so the global
    # cap counts them
    unmanaged: tuple[Machine, ...] = ()

    @property
    def unmanaged_burn_usd_per_hour(self) -> float:
        return sum(m.price_hourly_usd for m in self.unmanaged if m.state in BILLED_STATES)

    @property
    def burn_usd_per_hour(self) -> float:
        return sum(p.burn_usd_per_hour for p in self.pools.values()) + self.unmanaged_burn_usd_per_hour


@dataclass(frozen=True)
class PreviousTick:
    """What a pool's last recorded decision read: when, its ready machines and its readings."""

    at: float
    ready: int
    readings: tuple[SignalReading, ...]


@dataclass(frozen=True)
class PoolHistory:
    """What the database remembers of a pool, for cooldowns and stabilization."""

    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    # (time, recommendation) of recent decisions, oldest first, for the stabilization window
    recommendations: tuple[tuple[float, int], ...] = ()
    # (time, demand) samples for the latency-aware policy (busy + queued work, in machines)
    demand: tuple[tuple[float, float], ...] = ()
    # the last decision's readings, for how fast the queue grew since (latency pools' surge)
    previous: PreviousTick | None = None


@dataclass(frozen=True)
class History:
    pools: Mapping[str, PoolHistory] = field(default_factory=dict)

    def of(self, pool: str) -> PoolHistory:
        return self.pools.get(pool, PoolHistory())


@dataclass(frozen=True)
class Reason:
    """Why a number changed.  `code` is stable (metrics, tests); `message` is for people."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CreateAction:
    pool: str
    count: int
    size: str
    region: str
    price_hourly_usd: float
    action: str = "create"


@dataclass(frozen=True)
class DestroyAction:
    pool: str
    machine_ids: tuple[str, ...]
    action: str = "destroy"


@dataclass(frozen=True)
class DrainAction:
    """Busy machines leaving the pool: tagged draining, no longer capacity, destroyed once
    they read idle or their drain times out (`[pools.machine_work] drain_timeout_s`)."""

    pool: str
    machine_ids: tuple[str, ...]
    action: str = "drain"


@dataclass(frozen=True)
class UndrainAction:
    """Draining machines taken back into the pool (warm, already billed) instead of buying."""

    pool: str
    machine_ids: tuple[str, ...]
    action: str = "undrain"


Action = CreateAction | DestroyAction | DrainAction | UndrainAction


@dataclass(frozen=True)
class PoolPlan:
    pool: str
    provider: str
    ready: int
    booting: int
    current: int
    recommendation: int  # the raw number the signals asked for
    desired: int  # after every rule and cap
    actions: tuple[Action, ...] = ()
    reasons: tuple[Reason, ...] = ()
    signals: tuple[SignalReading, ...] = ()
    held: bool = False  # nothing may change this tick (listing failed, provider blocked)
    draining: int = 0  # machines draining (not capacity, still billed)
    demand_sample: float | None = None  # stored with the decision; fed back as PoolHistory.demand

    @property
    def delta(self) -> int:
        return self.desired - self.current


@dataclass(frozen=True)
class Plan:
    at: float
    pools: tuple[PoolPlan, ...]
    burn_now_usd_per_hour: float
    burn_planned_usd_per_hour: float

    def pool(self, name: str) -> PoolPlan:
        for p in self.pools:
            if p.pool == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class TickResult:
    """What one tick decided, whether it acted, and what acting said per pool (codes and prose)."""

    plan: Plan
    dry_run: bool
    notes: Mapping[str, tuple[Reason, ...]] = field(default_factory=dict)

    def notes_of(self, pool: str) -> tuple[Reason, ...]:
        return tuple(self.notes.get(pool, ()))
