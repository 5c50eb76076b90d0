"""The provider contract against the embedded simulated cloud."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from providers.base import (
    CapacityError,
    CapacityMemory,
    CapacityWalk,
    ErrorKind,
    InstanceStatus,
    LaunchSpec,
    PoolTarget,
    ProviderInstance,
    QuotaExceeded,
)
from providers.simulated import SimulatedCloud
from tests.clock import FakeClock as Clock
from tests.provider_contract import *  # noqa: F403


@dataclass
class SimHarness:
    provider: SimulatedCloud
    clock: Clock
    fleet: str = "contract"
    boot_seconds: float = 120.0
    blocked: set = field(default_factory=set)

    def target(self, pool: str = "p1") -> PoolTarget:
        return PoolTarget(fleet=self.fleet, pool=pool, sizes=("gpu-h100x1-80gb", "gpu-l40sx1-48gb"),
                          regions=("tor1", "nyc2"), options={"boot_seconds": self.boot_seconds})

    def settle(self) -> None:
        self.clock.now += self.boot_seconds + 1

    def block_first_candidate(self, target: PoolTarget) -> None:
        self.provider.unavailable.add((target.sizes[0], target.regions[0]))

    def block_all_candidates(self, target: PoolTarget) -> None:
        self.provider.unavailable.update((s, r) for s in target.sizes for r in target.regions)

    def unblock_all(self) -> None:
        self.provider.unavailable.clear()

    def plant_foreign(self) -> str:
        return self.provider.add_foreign_machine("someone-else", "p1")


@pytest.fixture(params=["memory", "file"])
def harness(request, tmp_path) -> SimHarness:
    clock = Clock()
    path = tmp_path / "cloud.json" if request.param == "file" else None
    cloud = SimulatedCloud(state_path=path, clock=clock, capacity_miss_ttl_s=300.0)
    return SimHarness(provider=cloud, clock=clock)


def test_state_file_is_shared_between_instances(tmp_path) -> None:
    clock = Clock()
    a = SimulatedCloud(state_path=tmp_path / "c.json", clock=clock)
    target = PoolTarget(fleet="f", pool="p", sizes=("gpu-h100x1-80gb",), options={"boot_seconds": 60})
    made = a.create(LaunchSpec(target=target, count=2, token="tok1"))
    b = SimulatedCloud(state_path=tmp_path / "c.json", clock=clock)
    assert sorted(i.id for i in b.list_instances("f")) == sorted(i.id for i in made.instances)
    clock.now += 61
    assert {i.status for i in b.list_instances("f")} == {InstanceStatus.READY}


def test_quota_limits_creation() -> None:
    cloud = SimulatedCloud(quota_machines=3, clock=Clock())
    target = PoolTarget(fleet="f", pool="p", sizes=("gpu-h100x1-80gb",))
    assert len(cloud.create(LaunchSpec(target=target, count=5, token="a")).instances) == 3
    assert cloud.headroom(target).machines == 0
    with pytest.raises(QuotaExceeded):
        cloud.create(LaunchSpec(target=target, count=1, token="b"))


def test_capacity_walk_orders_fresh_first_then_remembered_oldest_first() -> None:
    clock = Clock()
    memory = CapacityMemory(300.0, clock)
    walk: CapacityWalk[str] = CapacityWalk(memory, where=str)
    memory.remember("b")
    clock.now += 10
    memory.remember("d")
    clock.now += 10
    memory.remember("a")
    assert walk.order(["a", "b", "c", "d", "e"]) == (["c", "e"], [("b", 20.0), ("d", 10.0), ("a", 0.0)])
    tried: list[str] = []

    def launch(candidate: str) -> list[ProviderInstance]:
        tried.append(candidate)
        if candidate != "d":
            raise CapacityError(f"none in {candidate}", code="NoRoom")
        return [ProviderInstance(id="1", pool="p", size="s", region=candidate, status=InstanceStatus.BOOTING)]

    landed = walk.run(["a", "b", "c", "d", "e"], launch, what="test")
    assert tried == ["c", "e", "b", "d"] and landed.candidate == "d"
    assert landed.notes[0] == "c: no capacity (NoRoom)"
    with pytest.raises(CapacityError) as refused:
        walk.run(["a", "b"], launch, what="test")
    assert refused.value.kind is ErrorKind.CAPACITY and refused.value.code == "NoRoom"


def test_capacity_walk_quota_skips_the_same_quota_and_raises_quota_when_only_quota_refused() -> None:
    walk: CapacityWalk[str] = CapacityWalk(CapacityMemory(300.0, Clock()), where=str, quota_key=lambda c: c[0])
    tried: list[str] = []

    def launch(candidate: str) -> list[ProviderInstance]:
        tried.append(candidate)
        raise QuotaExceeded("no", code="VcpuLimitExceeded")

    with pytest.raises(QuotaExceeded) as refused:
        walk.run(["g1", "g2", "p1"], launch, what="test")
    assert tried == ["g1", "p1"] and refused.value.kind is ErrorKind.QUOTA
