"""One contract suite for every provider adapter (see providers/base.py).

A test module opts in with:

    from tests.provider_contract import *  # noqa: F403  (the contract tests)

    @pytest.fixture
    def harness(...) -> Harness: ...

`Harness` wraps a provider and the handles a test needs on the cloud behind it
(its clock, its fault injection, a way to plant a machine that is not ours).
"""

from __future__ import annotations

import uuid
from typing import Protocol

import pytest

from providers.base import (
    Capabilities,
    CapacityError,
    Headroom,
    InstanceStatus,
    LaunchSpec,
    PoolTarget,
    Provider,
    ProviderInstance,
)


class Harness(Protocol):
    provider: Provider
    fleet: str

    def target(self, pool: str = "p1") -> PoolTarget:
        """A valid launch target with at least two size (or region) candidates, in order."""

    def settle(self) -> None:
        """Let time pass on the cloud so booting machines become ready."""

    def block_first_candidate(self, target: PoolTarget) -> None:
        """Make the first size/region candidate of `target` answer with a capacity error."""

    def block_all_candidates(self, target: PoolTarget) -> None: ...

    def unblock_all(self) -> None:
        """Give every candidate its capacity back (what the adapter remembers stays)."""

    def plant_foreign(self) -> str:
        """Create a machine tagged for another fleet; return its id."""


def _token() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _listed(harness: Harness) -> dict[str, ProviderInstance]:
    return {i.id: i for i in harness.provider.list_instances(harness.fleet)}


def test_contract_create_then_list_shows_tagged_machines(harness: Harness) -> None:
    target = harness.target()
    token = _token()
    result = harness.provider.create(LaunchSpec(target=target, count=3, token=token))
    assert len(result.instances) == 3
    assert result.size == target.sizes[0]
    listed = _listed(harness)
    for inst in result.instances:
        assert inst.id in listed
        got = listed[inst.id]
        assert got.pool == target.pool
        assert got.token == token
        assert got.size == target.sizes[0]
        assert got.status in (InstanceStatus.BOOTING, InstanceStatus.READY)


def test_contract_booting_machines_become_ready(harness: Harness) -> None:
    result = harness.provider.create(LaunchSpec(target=harness.target(), count=1, token=_token()))
    harness.settle()
    assert _listed(harness)[result.instances[0].id].status is InstanceStatus.READY


def test_contract_ready_machines_have_distinct_private_addresses(harness: Harness) -> None:
    # per-machine metrics (a Prometheus `instance` label) are matched to machines by address
    result = harness.provider.create(LaunchSpec(target=harness.target(), count=2, token=_token()))
    harness.settle()
    listed = _listed(harness)
    addresses = [listed[i.id].private_ip for i in result.instances]
    assert all(addresses), addresses
    assert len(set(addresses)) == 2


def test_contract_other_fleets_are_never_listed(harness: Harness) -> None:
    foreign = harness.plant_foreign()
    ours = harness.provider.create(LaunchSpec(target=harness.target(), count=1, token=_token()))
    listed = _listed(harness)
    assert foreign not in listed
    assert ours.instances[0].id in listed


def test_contract_destroy_removes_and_is_idempotent(harness: Harness) -> None:
    result = harness.provider.create(LaunchSpec(target=harness.target(), count=2, token=_token()))
    first, second = (i.id for i in result.instances)
    assert harness.provider.destroy([first]) == []
    harness.settle()
    listed = _listed(harness)
    assert first not in listed and second in listed
    # already gone, twice over, mixed with a live one: not an error for anyone
    assert harness.provider.destroy([first, second]) == []
    harness.settle()
    assert not ({first, second} & set(_listed(harness)))


def test_contract_capacity_miss_moves_to_next_candidate(harness: Harness) -> None:
    target = harness.target()
    harness.block_first_candidate(target)
    result = harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    assert len(result.instances) == 1
    assert (result.size, result.region) != (target.sizes[0], target.regions[0] if target.regions else None)
    assert result.notes, "the adapter must say why it moved past the first candidate"


def test_contract_no_capacity_anywhere_raises_capacity_error(harness: Harness) -> None:
    target = harness.target()
    harness.block_all_candidates(target)
    with pytest.raises(CapacityError):
        harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    assert _listed(harness) == {}


def test_contract_price_and_headroom(harness: Harness) -> None:
    target = harness.target()
    price = harness.provider.price(target.sizes[0], target.regions[0] if target.regions else None)
    assert price is not None and price > 0
    headroom = harness.provider.headroom(target)
    assert isinstance(headroom, Headroom)
    assert headroom.machines is None or headroom.machines >= 0
    assert harness.provider.billing.cost(1, 3600.0) == pytest.approx(60.0)  # 60 s minimum


def test_contract_token_finds_what_a_lost_response_made(harness: Harness) -> None:
    """What the controller relies on after a crash: the token is on every machine it made."""
    token = _token()
    made = harness.provider.create(LaunchSpec(target=harness.target(), count=2, token=token))
    by_token = [i for i in harness.provider.list_instances(harness.fleet) if i.token == token]
    assert sorted(i.id for i in by_token) == sorted(i.id for i in made.instances)


def test_contract_mark_draining_tags_machines_and_a_gone_one_is_no_failure(harness: Harness) -> None:
    result = harness.provider.create(LaunchSpec(target=harness.target(), count=2, token=_token()))
    harness.settle()
    first, second = (i.id for i in result.instances)
    assert harness.provider.destroy([second]) == []
    harness.settle()
    assert harness.provider.mark_draining([first, second]) == []  # second is gone: nothing to mark
    assert harness.provider.mark_draining([first]) == []  # again: no change, no error
    listed = _listed(harness)
    assert listed[first].draining
    assert second not in listed or listed[second].draining is False
    other = harness.provider.create(LaunchSpec(target=harness.target(), count=1, token=_token()))
    harness.settle()
    assert _listed(harness)[other.instances[0].id].draining is False


def test_contract_unmark_draining_takes_the_tag_off_and_a_gone_one_is_no_failure(harness: Harness) -> None:
    result = harness.provider.create(LaunchSpec(target=harness.target(), count=2, token=_token()))
    harness.settle()
    first, second = (i.id for i in result.instances)
    assert harness.provider.mark_draining([first, second]) == []
    assert harness.provider.destroy([second]) == []
    harness.settle()
    assert harness.provider.unmark_draining([first, second]) == []
    assert harness.provider.unmark_draining([first]) == []  # again: no change, no error
    assert _listed(harness)[first].draining is False


def _first_candidate(target: PoolTarget) -> tuple[str, str | None]:
    return target.sizes[0], target.regions[0] if target.regions else None


def test_contract_capacity_walk_fresh_first_then_remembered_misses(harness: Harness) -> None:
    """The one walk (providers.base.CapacityWalk): a remembered miss is asked after every fresh
    candidate, and when only remembered misses are left they are still asked, not skipped."""
    target = harness.target()
    harness.block_first_candidate(target)
    moved = harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    first_size, first_region = _first_candidate(target)
    assert (moved.size, moved.region) != (first_size, first_region)
    harness.unblock_all()
    # the first candidate has capacity again, but its miss is remembered: a fresh one goes first
    again = harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    assert (again.size, again.region) == (moved.size, moved.region)
    harness.block_all_candidates(target)
    with pytest.raises(CapacityError) as refused:
        harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    assert refused.value.kind == "capacity"
    harness.unblock_all()
    # every candidate is a remembered miss now: they are asked, oldest first (ties in the pool's order)
    back = harness.provider.create(LaunchSpec(target=target, count=1, token=_token()))
    assert len(back.instances) == 1 and back.size == first_size


def test_contract_capabilities_are_declared(harness: Harness) -> None:
    caps = harness.provider.capabilities
    assert isinstance(caps, Capabilities)
    assert caps.tags and caps.drain_tag  # the contract's listing and mark_draining rely on both
    assert isinstance(harness.provider, Provider)
