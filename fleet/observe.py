"""Observe: one tick's view of the world, read before anything is decided.

Each provider is listed once, each pool's signals and per-machine work read under one
deadline, and each pool's launch price and quota headroom asked.  Errors become part of
the observation (a failed listing holds its pools; an auth error blocks its provider),
never exceptions: the tick still decides, records and exports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleet.cloud import launch_price, launch_target, unpriced
from fleet.config import Config, PoolConfig
from fleet.model import SignalReading
from fleet.signals.machine_work import MachineWorkReading
from fleet.telemetry import Telemetry
from providers.base import AuthError, Provider, ProviderError, ProviderInstance


class SignalReader(Protocol):
    """Reads every pool's signals and per-machine work under a deadline (fleet/signals/collect.py)."""

    def read_everything(self, pools: Sequence[PoolConfig]
                        ) -> tuple[dict[str, tuple[SignalReading, ...]], dict[str, MachineWorkReading]]: ...

    def read_pool_machine_work(self, pool: PoolConfig) -> MachineWorkReading | None: ...

    def close(self) -> None:
        """Stop reading (the process is stopping); a read hung in a client is abandoned."""


@dataclass
class Observation:
    """What one tick saw: provider listings (or their errors), prices, quota, signals."""

    listings: dict[str, list[ProviderInstance]] = field(default_factory=dict)
    listing_errors: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # provider → auth error message
    signals: dict[str, tuple[SignalReading, ...]] = field(default_factory=dict)
    machine_work: dict[str, MachineWorkReading] = field(default_factory=dict)  # pools that read it
    headroom: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    launch_price: dict[str, float | None] = field(default_factory=dict)
    unpriced: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pool -> candidates without a price

    def listed_ids(self, provider: str) -> set[str]:
        return {inst.id for inst in self.listings.get(provider, ())}


def observe(config: Config, providers: Mapping[str, Provider], signals: SignalReader,
            telemetry: Telemetry) -> Observation:
    obs = Observation()
    for name, each in providers.items():
        _list(obs, name, each, config.fleet.name, telemetry)
    obs.signals, obs.machine_work = signals.read_everything(config.pools)
    for pool in config.pools:
        provider = providers.get(pool.provider)
        if provider is not None and pool.provider not in obs.blocked:
            _price_and_quota(obs, config, pool, provider, telemetry)
    return obs


def _list(obs: Observation, name: str, provider: Provider, fleet: str, telemetry: Telemetry) -> None:
    try:
        obs.listings[name] = provider.list_instances(fleet)
    except AuthError as exc:
        obs.blocked[name] = f"{name}: authentication failed, not acting on this provider: {exc}"
        telemetry.provider_error(name, exc)
    except ProviderError as exc:
        obs.listing_errors[name] = f"listing {name} machines failed ({exc.kind}): {exc}"
        telemetry.provider_error(name, exc)


def _price_and_quota(obs: Observation, config: Config, pool: PoolConfig, provider: Provider,
                     telemetry: Telemetry) -> None:
    obs.launch_price[pool.name] = launch_price(pool, provider)
    obs.unpriced[pool.name] = unpriced(pool, provider)
    try:
        room = provider.headroom(launch_target(config, pool))
        obs.headroom[pool.name] = (room.machines, room.note)
    except ProviderError as exc:
        telemetry.provider_error(pool.provider, exc)
        obs.headroom[pool.name] = (None, f"quota unknown ({exc.kind}: {exc}): the pool's max applies")
