"""The view `decide` sees: each pool's machines (listed, or unlisted but still counted), its
per-machine work, its quota headroom and launch price, and why it may have to hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from fleet.cloud import size_price
from fleet.config import Config, PoolConfig
from fleet.instances import of_pool, price_of, state_of, unlisted_machine
from fleet.model import Fleet, Machine, MachineState, PoolView
from fleet.observe import Observation
from fleet.reconcile import ListingGrace
from fleet.store.repo import ActionRow, MachineRow
from fleet.work import WorkTracker
from providers.base import Provider, ProviderInstance

# states the database knows better than a listing: ours to end, or not serving
_DB_STATES = frozenset({MachineState.TERMINATING, MachineState.DRAINING, MachineState.FAILED})


def machine_of_row(r: MachineRow) -> Machine:
    return Machine(id=r.provider_id, pool=r.pool, state=r.state, size=r.size, region=r.region,
                   price_hourly_usd=r.price_hourly_usd, created_at=r.created_at, ready_at=r.ready_at,
                   draining_since=r.state_changed_at if r.state is MachineState.DRAINING else None)


def _listed_machine(pool: PoolConfig, provider: Provider, inst: ProviderInstance, row: MachineRow | None,
                    now: float) -> Machine:
    if row is None:
        return unlisted_machine(pool, provider, inst, now)
    state = row.state if row.state in _DB_STATES else state_of(inst)
    m = machine_of_row(row)
    # burn is counted at what the size costs now (a price change binds the caps at once); the
    # price it was bought at stays in its row, for the ledger
    return Machine(id=inst.id, pool=pool.name, state=state, size=inst.size, region=inst.region,
                   price_hourly_usd=price_of(pool, provider, inst, m.price_hourly_usd), created_at=m.created_at,
                   ready_at=m.ready_at, draining_since=m.draining_since)


def _unlisted_machine(pool: PoolConfig, provider: Provider, row: MachineRow) -> Machine:
    """A machine the listing does not show (or could not list), at its size's current price."""
    m = machine_of_row(row)
    price = size_price(pool, provider, row.size, row.region) or m.price_hourly_usd
    return replace(m, price_hourly_usd=price)


def _in_flight(pool: PoolConfig, creates: list[ActionRow], listing: list[ProviderInstance],
               rows: list[MachineRow], price: float | None) -> tuple[Machine, ...]:
    """The machines of creates whose answer was lost (or that a crash or another replica left
    pending) and that neither a listing nor a row shows yet: booting capacity (or the next
    decision would buy them again), billed at the launch price."""
    out = []
    for action in creates:
        known = ({i.id for i in listing if i.token == action.token}
                 | {r.provider_id for r in rows if r.token == action.token})
        for i in range(action.count - len(known)):
            out.append(Machine(id=f"{action.token}#{i}", pool=pool.name, state=MachineState.BOOTING,
                               size=action.size or "", region=action.region or "", price_hourly_usd=price or 0.0,
                               created_at=action.created_at, in_flight=True))
    return tuple(out)


_Row = TypeVar("_Row", MachineRow, ActionRow)


def _of(pool: PoolConfig, rows: Sequence[_Row]) -> list[_Row]:
    """The rows of this pool on its provider (a pool moved to another provider leaves its old
    machines to nobody: they are unmanaged)."""
    return [r for r in rows if r.provider == pool.provider and r.pool == pool.name]


class FleetViewer:
    def __init__(self, config: Config, providers: Mapping[str, Provider], grace: ListingGrace,
                 work: WorkTracker):
        self.config = config
        self.providers = providers
        self.grace = grace
        self.work = work

    def view(self, obs: Observation, rows: list[MachineRow], pending: list[ActionRow], now: float,
             vanished: Sequence[MachineRow] = ()) -> Fleet:
        """`rows`: the unfinished machine rows (after reconcile, when the tick acts); `pending`:
        the creates whose machines may exist unseen; `vanished`: machines closed lately because
        a listing stopped showing them."""
        self.work.begin_view()
        views = {pool.name: self._pool_view(pool, obs, _of(pool, rows), _of(pool, pending), _of(pool, vanished), now)
                 for pool in self.config.pools}
        self.work.end_view()
        # a pool removed, renamed, or moved to another provider leaves machines no view holds
        configured = {(p.provider, p.name) for p in self.config.pools}
        unmanaged = tuple(machine_of_row(r) for r in rows if (r.provider, r.pool) not in configured)
        return Fleet(pools=views, unmanaged=unmanaged)

    def _pool_view(self, pool: PoolConfig, obs: Observation, rows: list[MachineRow], creates: list[ActionRow],
                   vanished: list[MachineRow], now: float) -> PoolView:
        listing = obs.listings.get(pool.provider)
        machines = self._machines(pool, listing, rows, now)
        machines += _in_flight(pool, creates, listing or [], rows, obs.launch_price.get(pool.name))
        work_note = None
        if pool.machine_work is not None:
            machines, work_note = self.work.with_work(pool, machines, listing or [],
                                                      obs.machine_work.get(pool.name), now)
        headroom, note = obs.headroom.get(pool.name, (None, ""))
        return PoolView(
            name=pool.name, machines=machines, machine_work=work_note,
            listing_error=obs.listing_errors.get(pool.provider) or self._unavailable(pool, obs),
            provider_blocked=obs.blocked.get(pool.provider),
            headroom=headroom, headroom_note=note, launch_price_hourly_usd=obs.launch_price.get(pool.name),
            unpriced=obs.unpriced.get(pool.name, ()),
            vanished_usd_per_hour=sum(self._price(pool, r) for r in vanished
                                      if r.provider_id not in obs.listed_ids(pool.provider)),
        )

    def _machines(self, pool: PoolConfig, listing: list[ProviderInstance] | None, rows: list[MachineRow],
                  now: float) -> tuple[Machine, ...]:
        provider = self.providers[pool.provider]
        if listing is None:  # the listing failed: the database's memory, and the pool holds
            return tuple(_unlisted_machine(pool, provider, r) for r in rows)
        by_id = {r.provider_id: r for r in rows}
        listed = of_pool(listing, pool.name)
        machines = tuple(_listed_machine(pool, provider, inst, by_id.get(inst.id), now) for inst in listed)
        # just created and not listed yet, or missed by this listing for a moment: still capacity,
        # or the next decision would launch the same machines again
        seen = {inst.id for inst in listed}
        return machines + tuple(_unlisted_machine(pool, provider, r) for r in rows
                                if r.provider_id not in seen and self.grace.counts(r, now))

    def _price(self, pool: PoolConfig, row: MachineRow) -> float:
        provider = self.providers.get(pool.provider)
        if provider is None:
            return row.price_hourly_usd
        return _unlisted_machine(pool, provider, row).price_hourly_usd

    def _unavailable(self, pool: PoolConfig, obs: Observation) -> str | None:
        if pool.provider in self.providers or pool.provider in obs.blocked:
            return None
        return f"provider {pool.provider} is not available"
