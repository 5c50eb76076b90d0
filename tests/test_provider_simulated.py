"""The provider contract against the embedded simulated cloud."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from providers.base import InstanceStatus, LaunchSpec, PoolTarget, QuotaExceeded
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

    def plant_foreign(self) -> str:
        return self.provider.add_foreign_machine("someone-else", "p1")


@pytest.fixture(params=["memory", "file"])
def harness(request, tmp_path) -> SimHarness:
    clock = Clock()
    path = tmp_path / "cloud.json" if request.param == "file" else None
    return SimHarness(provider=SimulatedCloud(state_path=path, clock=clock), clock=clock)


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
