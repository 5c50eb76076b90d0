"""The machine sync: each listed machine gets a row (adopted when unknown), each row follows
its provider's state, and a row whose machine is gone is closed and charged to its end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fleet.config import Config
from fleet.instances import created_at, pool_config, price_of, state_of
from fleet.model import MachineState
from fleet.reconcile.grace import ListingGrace
from fleet.store.repo import ActionRow, MachineRow, Store, to_dt
from fleet.telemetry import kv
from providers.base import Provider, ProviderInstance

log = logging.getLogger("fleet")

_FOLLOW_REASON = {
    MachineState.READY: "provider reports it ready",
    MachineState.BOOTING: "provider reports it booting",
    MachineState.TERMINATING: "provider reports it terminating",
}


class MachineSync:
    def __init__(self, config: Config, store: Store, providers: Mapping[str, Provider], grace: ListingGrace,
                 billing: Callable[[], float]):
        self.config = config
        self.store = store
        self.providers = providers
        self.grace = grace
        self.billing = billing

    def sync(self, provider: str, listing: list[ProviderInstance], rows: list[MachineRow],
             creates: Mapping[str, ActionRow], now: float) -> None:
        """Mirror one provider's listing: `rows` are its unfinished machine rows, `creates` the
        recent create actions by token (a machine carrying one was made by that action)."""
        known = {r.provider_id: r for r in rows}
        for inst in listing:
            row = known.get(inst.id)
            if row is None:
                self._adopt(provider, inst, creates.get(inst.token or ""), now)
            else:
                self._follow(row, inst, now)
        listed = {inst.id for inst in listing}
        unlisted = [r for r in rows if r.provider_id not in listed]
        self.grace.note_listing(provider, (r.provider_id for r in unlisted
                                           if r.state is not MachineState.TERMINATING), now)
        for row in unlisted:
            if row.state is MachineState.TERMINATING or not self.grace.within(row, now):
                self._close(provider, row, now)

    def _close(self, provider: str, row: MachineRow, now: float) -> None:
        gone = row.state is MachineState.TERMINATING
        reason = ("destroyed: gone from the provider listing" if gone
                  else "vanished from the provider listing (deleted outside fleet or reclaimed)")
        self.grace.forget(row)
        end = min(row.terminating_at if row.terminating_at is not None else now, self.billing())
        self.store.accrue(row, end, min_seconds=self.providers[provider].billing.min_seconds)
        self.store.move(row, MachineState.TERMINATED, now, reason)
        log.info(kv(event="machine_closed", pool=row.pool, machine=row.provider_id, reason=reason))

    def _adopt(self, provider: str, inst: ProviderInstance, action: ActionRow | None, now: float) -> None:
        closed = self.store.closed_machine(provider, inst.id)
        if closed is not None:
            self._reopen(closed, inst, now)
            return
        pool = pool_config(self.config, inst.pool)
        reason = (f"adopted: created by action {action.token} whose answer never reached us" if action
                  else f"adopted: tagged fleet:{self.config.fleet.name} but unknown to the database")
        if pool is None:
            reason += f" (pool {inst.pool!r} is not in the config)"
        self.store.add_machine(provider=provider, provider_id=inst.id, pool=inst.pool, state=state_of(inst),
                               size=inst.size, region=inst.region,
                               price_hourly_usd=price_of(pool, self.providers[provider], inst),
                               token=inst.token, spot=inst.spot, created_at=created_at(inst, now), now=now,
                               # billed for its age, counted on the wall clock the provider stamped it by
                               reason=reason, accrued_from=self.billing() - (now - created_at(inst, now)))
        log.warning(kv(event="machine_adopted", pool=inst.pool, machine=inst.id, reason=reason))

    def _reopen(self, closed: MachineRow, inst: ProviderInstance, now: float) -> None:
        """Closed while a listing missed it, and listed again: the same machine, the same row; one
        we had asked to destroy stays on its way out (its destroy is asked again)."""
        if closed.terminating_at is not None:
            self.store.move(closed, MachineState.TERMINATING, now, "listed again after its destroy: "
                            "asking again", terminating_at=to_dt(closed.terminating_at))
        else:
            self.store.move(closed, state_of(inst), now, "listed again after it was closed: a listing missed it")
        log.warning(kv(event="machine_reappeared", pool=inst.pool, machine=inst.id))

    def _follow(self, row: MachineRow, inst: ProviderInstance, now: float) -> None:
        """Move a known machine to the state its provider reports."""
        seen = state_of(inst)
        if row.state is MachineState.TERMINATING or seen is row.state:
            return  # we asked for its end; the listing catches up
        if row.state is MachineState.DRAINING and seen in (MachineState.READY, MachineState.BOOTING):
            return  # draining: running, and ours to end
        if row.state is MachineState.FAILED and seen is not MachineState.TERMINATING:
            return
        reason = _FOLLOW_REASON.get(seen) or f"provider reports it {inst.status.value}: not serving, still billed"
        self.store.move(row, seen, now, reason)
