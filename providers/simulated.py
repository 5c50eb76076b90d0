"""An embedded cloud for demos, dry runs and simulation.  See providers/base.py.

Machines boot in the pool's `boot_seconds` (`PoolTarget.options["boot_seconds"]`),
are billed per second with a 60 s minimum, and carry tags like real ones.  An
optional machine quota and a seeded capacity-error rate make the unhappy paths
reachable.  With a `state_path` the cloud persists to a JSON file (written
atomically), so separate `fleet run --once` invocations and `fleet plan` see one
cloud; without one it lives in memory (the simulator, tests).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from providers.aws_catalog import PRICE_TABLE as EC2_PRICES
from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    POOL_TAG,
    TOKEN_TAG,
    BillingRule,
    Capabilities,
    CapacityError,
    CapacityMemory,
    CapacityWalk,
    DestroyFailure,
    Headroom,
    InstanceStatus,
    InvalidRequest,
    LaunchResult,
    LaunchSpec,
    PoolTarget,
    ProviderInstance,
    QuotaExceeded,
)

# On-demand $/h of common GPU sizes (DigitalOcean and EC2 list prices, May 2026; see
# ../shared/reference/providers.md).  `[providers.simulated] prices` or a pool's
# `price_hourly_usd` override them.
PRICE_TABLE: Mapping[str, float] = {
    "gpu-4000adax1-20gb": 0.76,
    "gpu-6000adax1-48gb": 1.89,
    "gpu-l40sx1-48gb": 1.57,
    "gpu-h100x1-80gb": 3.39,
    "gpu-h100x8-640gb": 23.92,
    "gpu-mi300x1-192gb": 1.99,
    "gpu-mi300x8-1536gb": 15.92,
    **EC2_PRICES,
}
DEFAULT_REGION = "sim1"
DEFAULT_BOOT_SECONDS = 180.0


@dataclass
class _SimMachine:
    id: str
    pool: str
    size: str
    region: str
    created_at: float
    ready_at: float
    tags: dict[str, str]
    name: str
    destroyed_at: float | None = None

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class _State:
    next_id: int = 1
    machines: dict[str, _SimMachine] = field(default_factory=dict)


class SimulatedCloud:
    name = "simulated"
    billing = BillingRule(min_seconds=60.0)
    capabilities = Capabilities(local_prices=True, quotas=True)

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        quota_machines: int | None = None,
        capacity_error_rate: float = 0.0,
        seed: int = 0,
        prices: Mapping[str, float] | None = None,
        capacity_miss_ttl_s: float = 0.0,
    ):
        self._path = Path(state_path) if state_path else None
        self._clock = clock
        self._quota = quota_machines
        self._error_rate = capacity_error_rate
        self._rng = random.Random(seed)
        self._prices = {**PRICE_TABLE, **(prices or {})}
        self._state = _State()
        # Off by default: the simulator's figures assume every candidate is asked each time.
        self._walk: CapacityWalk[tuple[str, str]] = CapacityWalk(
            CapacityMemory(capacity_miss_ttl_s, clock), where=lambda c: f"{c[0]} in {c[1]}",
            detail=lambda err: "")
        # (size, region) pairs that always answer "no capacity" (tests inject these)
        self.unavailable: set[tuple[str, str]] = set()
        self.calls: list[str] = []  # every call, in order: a recorded log for tests

    # ------------------------------------------------------------ persistence

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            self._state = _State(
                next_id=int(data["next_id"]),
                machines={m["id"]: _SimMachine(**m) for m in data["machines"]},
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"simulated cloud state {self._path} is unreadable: {exc}") from exc

    def _save(self) -> None:
        if self._path is None:
            return
        payload = {"next_id": self._state.next_id,
                   "machines": [m.to_json() for m in self._state.machines.values()]}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".simcloud-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        os.replace(tmp, self._path)

    # ------------------------------------------------------------ the contract

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        self.calls.append("list")
        self._load()
        now = self._clock()
        return [self._view(m, now) for m in self._state.machines.values()
                if m.destroyed_at is None and m.tags.get(FLEET_TAG) == fleet]

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self.calls.append("create")
        self._load()
        target = spec.target
        headroom = self._headroom_count()
        if headroom is not None and headroom < 1:
            raise QuotaExceeded(f"machine quota of {self._quota} reached")
        count = spec.count if headroom is None else min(spec.count, headroom)
        notes = [f"{size}: unknown size" for size in target.sizes if size not in self._prices]
        candidates = [(size, region) for size in target.sizes if size in self._prices
                      for region in target.regions or (DEFAULT_REGION,)]
        landed = self._walk.run(candidates, lambda c: self._launch(spec, c, count),
                                what=f"launching {count} for pool {target.pool}", notes=notes)
        size, region = landed.candidate
        return LaunchResult(instances=landed.instances, size=size, region=region, notes=landed.notes)

    def _launch(self, spec: LaunchSpec, candidate: tuple[str, str], count: int) -> list[ProviderInstance]:
        size, region = candidate
        if candidate in self.unavailable or (self._error_rate and self._rng.random() < self._error_rate):
            raise CapacityError(f"no capacity for {size} in {region}")
        target = spec.target
        boot_s = float(target.options.get("boot_seconds", DEFAULT_BOOT_SECONDS))
        now = self._clock()
        made = []
        for i in range(count):
            machine_id = str(self._state.next_id)
            self._state.next_id += 1
            machine = _SimMachine(
                id=machine_id, pool=target.pool, size=size, region=region, created_at=now,
                ready_at=now + boot_s, name=f"{spec.token}-{i}",
                tags={FLEET_TAG: target.fleet, POOL_TAG: target.pool, TOKEN_TAG: spec.token},
            )
            self._state.machines[machine_id] = machine
            made.append(self._view(machine, now))
        self._save()
        return made

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        self.calls.append("destroy")
        self._load()
        now = self._clock()
        for machine_id in ids:
            machine = self._state.machines.get(machine_id)
            if machine is not None and machine.destroyed_at is None:
                machine.destroyed_at = now  # gone at once; an unknown id counts as destroyed
        self._save()
        return []

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        return self._tag_draining(ids, True)

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        return self._tag_draining(ids, False)

    def _tag_draining(self, ids: Sequence[str], on: bool) -> list[DestroyFailure]:
        self.calls.append("mark_draining" if on else "unmark_draining")
        self._load()
        for machine_id in ids:
            machine = self._state.machines.get(machine_id)
            if machine is None or machine.destroyed_at is not None:
                continue  # gone: nothing to (un)mark
            if on:
                machine.tags[DRAINING_TAG] = "true"
            else:
                machine.tags.pop(DRAINING_TAG, None)
        self._save()
        return []

    def headroom(self, target: PoolTarget) -> Headroom:
        self._load()
        count = self._headroom_count()
        if count is None:
            return Headroom(None)  # no quota configured: nothing to report
        return Headroom(count, f"simulated quota {self._quota} machines")

    def price(self, size: str, region: str | None = None) -> float | None:
        return self._prices.get(size)

    # ------------------------------------------------------------ helpers for tests and the simulator

    def all_machines(self) -> list[ProviderInstance]:
        """Every live machine of every fleet (tests: what really exists)."""
        self._load()
        now = self._clock()
        return [self._view(m, now) for m in self._state.machines.values() if m.destroyed_at is None]

    def add_foreign_machine(self, fleet: str, pool: str, size: str = "gpu-h100x1-80gb") -> str:
        """A machine someone else made (another fleet, or tagged by hand)."""
        self._load()
        machine_id = str(self._state.next_id)
        self._state.next_id += 1
        now = self._clock()
        self._state.machines[machine_id] = _SimMachine(
            id=machine_id, pool=pool, size=size, region=DEFAULT_REGION, created_at=now, ready_at=now,
            tags={FLEET_TAG: fleet, POOL_TAG: pool}, name=f"foreign-{machine_id}")
        self._save()
        return machine_id

    def _headroom_count(self) -> int | None:
        if self._quota is None:
            return None
        live = sum(1 for m in self._state.machines.values() if m.destroyed_at is None)
        return max(0, self._quota - live)

    def _view(self, m: _SimMachine, now: float) -> ProviderInstance:
        return ProviderInstance(
            id=m.id, pool=m.tags.get(POOL_TAG, m.pool), size=m.size, region=m.region,
            status=InstanceStatus.READY if now >= m.ready_at else InstanceStatus.BOOTING,
            created_at=datetime.fromtimestamp(m.created_at, tz=UTC), token=m.tags.get(TOKEN_TAG),
            name=m.name, price_hourly_usd=self._prices.get(m.size), tags=dict(m.tags),
            private_ip=private_ip(m.id) if now >= m.ready_at else None, draining=DRAINING_TAG in m.tags,
        )


def private_ip(machine_id: str) -> str:
    """The address a simulated machine gets once ready: 10.0.0.0/8, from its id."""
    n = int(machine_id) if machine_id.isdigit() else sum(map(ord, machine_id))
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
