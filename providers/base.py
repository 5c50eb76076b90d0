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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

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
    # Adapters without such idempotency (DigitalOcean) ignore both fields.
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
    """Base of the taxonomy; `kind` is the label used in metrics and reasons."""

    kind: ErrorKind = ErrorKind.PROVIDER


class CapacityError(ProviderError):
    """No capacity for this size/region now: try the next candidate."""

    kind = ErrorKind.CAPACITY


class QuotaExceeded(ProviderError):
    """The account's quota forbids more machines."""

    kind = ErrorKind.QUOTA


class RateLimited(ProviderError):
    """The provider asked us to slow down; `retry_after_s` is how long to wait."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
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


@runtime_checkable
class Provider(Protocol):
    name: str
    billing: BillingRule

    def list_instances(self, fleet: str) -> list[ProviderInstance]: ...

    def create(self, spec: LaunchSpec) -> LaunchResult: ...

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]: ...

    def headroom(self, target: PoolTarget) -> Headroom: ...

    def price(self, size: str, region: str | None = None) -> float | None: ...
