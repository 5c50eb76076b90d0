"""The provider contract: what every cloud adapter offers the controller.

An adapter owns one cloud SDK and translates between it and these plain values.
It never imports `fleet`; it classifies every SDK error once, into the taxonomy
below, so the controller and the policy never see an SDK exception.

Contract (checked by tests/provider_contract.py against every adapter):

- `list_instances(fleet)` returns every live machine tagged `fleet:<fleet>`
  (all pages), never a partial view: when the listing cannot be completed it
  raises a `ProviderError`, and the caller holds the pool.  Machines that are
  fully gone (terminated, deleted) are not returned.
- `create(spec)` launches up to `spec.count` machines of the first size/region
  candidate that has capacity, tagged with fleet, pool and `spec.token`.  It
  returns what was really launched (which may be fewer than asked).  The token
  makes it idempotent: machines carrying it are found by `list_instances`
  (`ProviderInstance.token`), so a controller that crashed after the call adopts
  them instead of creating again.  Capacity misses move to the next candidate;
  only when no candidate could launch anything does it raise.
- `destroy(ids)` asks for each id to be destroyed.  An id that is already gone
  counts as destroyed.  It returns the ids it could not destroy this time, with
  the reason, so one bad id never blocks the others.
- `mark_draining(ids)` tags each machine with DRAINING_TAG (listed as
  `ProviderInstance.draining`).  Marking one that is already marked, or gone, succeeds.  It
  returns the ids it could not mark, with the reason, as `destroy` does.
  `unmark_draining(ids)` takes the tag off again (a machine taken back into its pool), the
  same way.
- `headroom(target)` says how many more machines of this pool the account's
  quota admits, or `None` with a note when the quota cannot be known.
- `price(size, region)` is the on-demand hourly USD price, or `None`.
- `billing` is the provider's billing rule; the ledger uses it.
- `capabilities` says what the adapter offers (`Capabilities`); core reads it instead of
  lists of provider names.

Every adapter walks its launch candidates with `CapacityWalk` (below): one rule for what a
remembered capacity miss means, whichever cloud.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

FLEET_TAG = "fleet"
POOL_TAG = "pool"
TOKEN_TAG = "fleet-token"
# A machine leaving the pool carries this tag (an EC2 tag key, a DigitalOcean tag): a load
# balancer or service discovery that honours it sends the machine no new work while it drains.
DRAINING_TAG = "fleet-draining"


class InstanceStatus(StrEnum):
    """A machine's state as the cloud reports it, mapped by the adapter."""

    BOOTING = "booting"  # requested, pending, DO "new"
    READY = "ready"  # running, DO "active"
    STOPPED = "stopped"  # powered off: still billed (DO "off"/"archive", EC2 stopped)
    TERMINATING = "terminating"  # shutting-down / stopping


@dataclass(frozen=True)
class ProviderInstance:
    """One machine as the provider lists it."""

    id: str
    pool: str
    size: str
    region: str
    status: InstanceStatus
    created_at: datetime | None = None
    token: str | None = None  # the idempotency token of the action that created it
    name: str = ""
    spot: bool = False
    price_hourly_usd: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # Addresses, for matching per-machine metrics to machines (None until the cloud assigns one)
    private_ip: str | None = None
    public_ip: str | None = None
    draining: bool = False  # it carries DRAINING_TAG (see `mark_draining`)


@dataclass(frozen=True)
class PoolTarget:
    """Where and what a pool launches: everything an adapter needs but the count."""

    fleet: str
    pool: str
    sizes: tuple[str, ...]
    regions: tuple[str, ...] = ()
    # Adapter-specific launch settings (image, ssh_keys, user_data, subnets,
    # launch_template, capacity, spot_fallback, vpc_uuid, ...), already validated.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchSpec:
    target: PoolTarget
    count: int
    token: str  # deterministic per action: EC2 ClientToken, Droplet name prefix
    # A retry of a create whose answer was lost: the candidate (an adapter's opaque key) the
    # lost call was last sent to.  It is tried first, so an idempotent provider (EC2's
    # ClientToken) answers with what that call made instead of another candidate launching anew.
    # Adapters without such idempotency (`Capabilities.idempotent_create` false: DigitalOcean)
    # ignore `resume` and never call `on_attempt`.
    resume: str | None = None
    # Called with a candidate's key just before the call that may launch there (to be recorded)
    on_attempt: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"LaunchSpec.count must be >= 1, got {self.count}")


@dataclass(frozen=True)
class LaunchResult:
    instances: tuple[ProviderInstance, ...]
    size: str | None = None
    region: str | None = None
    # Why the adapter moved past a candidate ("g6e.xlarge in subnet-a: capacity").
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headroom:
    machines: int | None  # None: unknown, the pool's own max applies
    note: str = ""


@dataclass(frozen=True)
class BillingRule:
    """Per-second billing with a minimum charge, as DigitalOcean and EC2 bill."""

    min_seconds: float = 60.0

    def billable_seconds(self, lifetime_s: float) -> float:
        return max(self.min_seconds, math.ceil(max(0.0, lifetime_s)))

    def cost(self, lifetime_s: float, price_hourly_usd: float) -> float:
        return self.billable_seconds(lifetime_s) * price_hourly_usd / 3600.0


@dataclass(frozen=True)
class Capabilities:
    """What an adapter offers; core reads these instead of lists of provider names."""

    local_prices: bool  # the price table ships with the adapter: an unknown price is a config error at start
    tags: bool = True  # machines carry fleet/pool/token tags and are listed by them
    quotas: bool = False  # `headroom` can read the account's quota (else it answers None)
    drain_tag: bool = True  # `mark_draining` puts DRAINING_TAG on the machine, visible to others
    spot: bool = False  # a pool may ask for interruptible (spot) capacity
    stop_start: bool = False  # a machine can be powered off and started again
    bills_stopped_in_full: bool = False  # a stopped machine is billed as if it ran
    idempotent_create: bool = False  # a retried create with `LaunchSpec.resume` returns what the lost call made


class CapacityMemory:
    """Remembers launch candidates that answered "no capacity", for `ttl_s` seconds, so the
    next ticks go straight to a candidate that may have some instead of asking again."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]):
        self._ttl = ttl_s
        self._clock = clock
        self._missed_at: dict[Hashable, float] = {}

    def remember(self, candidate: Hashable) -> None:
        if self._ttl > 0:
            self._missed_at[candidate] = self._clock()

    def age(self, candidate: Hashable) -> float | None:
        """Seconds since `candidate` had no capacity, or None when that is not remembered (any more)."""
        at = self._missed_at.get(candidate)
        if at is None:
            return None
        age = self._clock() - at
        if age >= self._ttl:
            del self._missed_at[candidate]
            return None
        return age


# ---------------------------------------------------------------- errors


class ErrorKind(StrEnum):
    """The error taxonomy as codes: metrics labels, reasons, and the actions table's
    `error_kind` column all carry these."""

    PROVIDER = "provider"
    CAPACITY = "capacity"
    QUOTA = "quota"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    AUTH = "auth"
    INVALID = "invalid"

    @property
    def backs_off(self) -> bool:
        """A create that failed this way is retried with a growing wait, not next tick:
        capacity and rate limits pass by themselves (their own walk and reset header)."""
        return self not in (ErrorKind.CAPACITY, ErrorKind.RATE_LIMITED)


class ProviderError(Exception):
    """Base of the taxonomy; `kind` is the label used in metrics and reasons.

    `code` is the cloud's own error code when it gave one (EC2's `Error.Code`, DigitalOcean's
    error `id`), so an adapter compares codes and kinds, never message prose.
    """

    kind: ErrorKind = ErrorKind.PROVIDER

    def __init__(self, message: str = "", *, code: str = ""):
        super().__init__(message)
        self.code = code


class CapacityError(ProviderError):
    """No capacity for this size/region now: try the next candidate."""

    kind = ErrorKind.CAPACITY


class QuotaExceeded(ProviderError):
    """The account's quota forbids more machines."""

    kind = ErrorKind.QUOTA


class RateLimited(ProviderError):
    """The provider asked us to slow down; `retry_after_s` is how long to wait."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, retry_after_s: float | None = None, *, code: str = ""):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class TransientError(ProviderError):
    """5xx, timeouts, refused connections: safe to retry reads later."""

    kind = ErrorKind.TRANSIENT


class AuthError(ProviderError):
    """Bad or missing credentials: stop acting on this provider."""

    kind = ErrorKind.AUTH


class InvalidRequest(ProviderError):
    """The request itself is wrong (bad image, bad size): a config problem."""

    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class DestroyFailure:
    id: str
    error: ProviderError


# ---------------------------------------------------------------- the capacity walk

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True)
class Landed(Generic[C]):
    """Where a walk launched, what it launched, and why it moved past the candidates before."""

    candidate: C
    instances: tuple[ProviderInstance, ...]
    notes: tuple[str, ...]


@dataclass
class _Tally:
    skipped: list[str] = field(default_factory=list)  # remembered misses never reached
    notes: list[str] = field(default_factory=list)  # what each attempt answered, in order
    quota_refused: set[Hashable] = field(default_factory=set)
    only_quota: bool = True  # every candidate tried so far was refused for quota
    last: ProviderError | None = None
    previous: Any = None


def _no_hook(_: Any) -> None:
    return None


def _no_transition(_a: Any, _b: Any) -> None:
    return None


def _error_detail(err: ProviderError) -> str:
    return err.code or str(err)


@dataclass(frozen=True)
class CapacityWalk(Generic[C]):
    """The one walk over a pool's launch candidates (size × region × whatever else an adapter
    adds: a subnet, a market), used by every adapter.

    The rule: the candidate `resume` names (where a lost call went) first, whatever the memory
    says; then every candidate with no remembered capacity miss, in the pool's order; then the
    remembered misses, the oldest first.  A miss is a guess about the next few minutes, not a
    fact: skipping remembered misses for good (what the EC2 adapter used to do) launches
    nothing while capacity may be back, and a pool with demand stays short for the whole TTL.
    Trying them last costs one refused call each in the worst case and never delays a candidate
    that may have room; the oldest miss is the likeliest to have recovered.

    A capacity error is remembered and the walk moves on; a quota refusal skips the candidates
    drawing on the same quota (`quota_key`, None: no shared quota) and moves on; any other error
    propagates (it is not about this candidate).  When nothing launched it raises
    `QuotaExceeded` if every candidate was refused for quota, else `CapacityError`, chained to
    the last refusal, its message naming every candidate and why.
    """

    memory: CapacityMemory
    where: Callable[[C], str]  # a candidate as the notes name it ("g5.xlarge in tor1")
    quota_key: Callable[[C], Hashable | None] = _no_hook
    detail: Callable[[ProviderError], str] = _error_detail
    transition: Callable[[C, C], str | None] = _no_transition  # a note between two candidates

    def order(self, candidates: Sequence[C]) -> tuple[list[C], list[tuple[C, float]]]:
        """(the fresh candidates in order, the remembered misses with their age, oldest first)."""
        fresh: list[C] = []
        remembered: list[tuple[C, float]] = []
        for candidate in dict.fromkeys(candidates):
            age = self.memory.age(candidate)
            if age is None:
                fresh.append(candidate)
            else:
                remembered.append((candidate, age))
        remembered.sort(key=lambda pair: -pair[1])
        return fresh, remembered

    def run(self, candidates: Sequence[C], launch: Callable[[C], Sequence[ProviderInstance]], *,
            what: str, resume: C | None = None, notes: Sequence[str] = ()) -> Landed[C]:
        """Launch at the first candidate that takes; `what` names the request in the error."""
        tally = _Tally()
        if resume is not None and resume in candidates:
            landed = self._attempt(tally, resume, launch, " (retried where the lost call went)")
            if landed is not None:
                return self._landed(notes, tally, landed)
        fresh, remembered = self.order([c for c in candidates if c != resume])
        for candidate in fresh:
            landed = self._attempt(tally, candidate, launch)
            if landed is not None:
                tally.skipped = [f"{self.where(c)}: skipped, capacity miss remembered {age:.0f} s ago"
                                 for c, age in remembered]
                return self._landed(notes, tally, landed)
        if remembered:
            tally.notes.append(f"no fresh candidate launched: trying {len(remembered)} remembered "
                               "capacity misses, oldest first")
        for candidate, _age in remembered:
            landed = self._attempt(tally, candidate, launch)
            if landed is not None:
                return self._landed(notes, tally, landed)
        raise self._refusal(what, notes, tally) from tally.last

    def _attempt(self, tally: _Tally, candidate: C, launch: Callable[[C], Sequence[ProviderInstance]],
                 label: str = "") -> tuple[C, tuple[ProviderInstance, ...]] | None:
        if tally.previous is not None:
            between = self.transition(tally.previous, candidate)
            if between:
                tally.notes.append(between)
        tally.previous = candidate
        where = self.where(candidate) + label
        key = self.quota_key(candidate)
        if key is not None and key in tally.quota_refused:
            tally.notes.append(f"{where}: skipped, {key} quota already refused")
            return None
        try:
            made = tuple(launch(candidate))
        except CapacityError as err:
            self.memory.remember(candidate)
            tally.notes.append(f"{where}: no capacity{_parenthesized(self.detail(err))}")
            tally.only_quota, tally.last = False, err
            return None
        except QuotaExceeded as err:
            if key is not None:
                tally.quota_refused.add(key)
            tally.notes.append(f"{where}: quota{_parenthesized(self.detail(err))}")
            tally.last = err
            return None
        if not made:
            tally.notes.append(f"{where}: launched nothing")
            tally.only_quota = False
            return None
        if label:
            tally.notes.append(f"{where}: launched")
        return candidate, made

    @staticmethod
    def _refusal(what: str, notes: Sequence[str], tally: _Tally) -> ProviderError:
        message = "; ".join([*notes, *tally.notes])
        code = tally.last.code if tally.last else ""
        if tally.only_quota and isinstance(tally.last, QuotaExceeded):
            return QuotaExceeded(f"{what}: the quota admits no candidate: {message}", code=code)
        return CapacityError(f"{what}: no candidate had capacity: {message}", code=code)

    @staticmethod
    def _landed(notes: Sequence[str], tally: _Tally,
                landed: tuple[C, tuple[ProviderInstance, ...]]) -> Landed[C]:
        return Landed(landed[0], landed[1], (*notes, *tally.skipped, *tally.notes))


def _parenthesized(text: str) -> str:
    return f" ({text})" if text else ""


@runtime_checkable
class Provider(Protocol):
    name: str
    billing: BillingRule
    capabilities: Capabilities

    def list_instances(self, fleet: str) -> list[ProviderInstance]: ...

    def create(self, spec: LaunchSpec) -> LaunchResult: ...

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def headroom(self, target: PoolTarget) -> Headroom: ...

    def price(self, size: str, region: str | None = None) -> float | None: ...
