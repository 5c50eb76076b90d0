"""What a provider's listing means to fleet: a machine's state, its creation time and its
price, each rule written once for reconcile, the view and the executor."""

from __future__ import annotations

from collections.abc import Iterable

from fleet.cloud import size_price
from fleet.config import Config, PoolConfig
from fleet.model import Machine, MachineState
from providers.base import InstanceStatus, Provider, ProviderInstance

STATE_OF_STATUS = {
    InstanceStatus.BOOTING: MachineState.BOOTING,
    InstanceStatus.READY: MachineState.READY,
    InstanceStatus.TERMINATING: MachineState.TERMINATING,
    InstanceStatus.STOPPED: MachineState.FAILED,
}


def state_of(inst: ProviderInstance) -> MachineState:
    return STATE_OF_STATUS[inst.status]


def created_at(inst: ProviderInstance, now: float) -> float:
    """When the provider says it was created, never later than `now` (a clock ahead of ours)."""
    return min(inst.created_at.timestamp(), now) if inst.created_at else now


def price_of(pool: PoolConfig | None, provider: Provider, inst: ProviderInstance,
             fallback: float | None = None) -> float:
    """The machine's hourly price: the pool's override or the provider's table for its size and
    region, else what the listing says, else `fallback`, else 0 (unknown)."""
    price = size_price(pool, provider, inst.size, inst.region) if pool is not None else None
    return price or inst.price_hourly_usd or fallback or 0.0


def unlisted_machine(pool: PoolConfig, provider: Provider, inst: ProviderInstance, now: float) -> Machine:
    """A listed machine the database does not know yet, as the policy sees it."""
    return Machine(id=inst.id, pool=pool.name, state=state_of(inst), size=inst.size, region=inst.region,
                   price_hourly_usd=price_of(pool, provider, inst), created_at=created_at(inst, now))


def of_pool(listing: Iterable[ProviderInstance], pool: str) -> list[ProviderInstance]:
    return [inst for inst in listing if inst.pool == pool]


def pool_config(config: Config, name: str) -> PoolConfig | None:
    """The configured pool of that name, or None (a machine of a pool removed from the config)."""
    return next((p for p in config.pools if p.name == name), None)
