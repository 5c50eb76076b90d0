"""Reconcile one tick's listings: the machine sync, then the intent-log settlement, per provider."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fleet.config import Config
from fleet.model import ActionKind
from fleet.reconcile.grace import ListingGrace
from fleet.reconcile.intents import TOKEN_REUSE_S, settle_intents
from fleet.reconcile.machines import MachineSync
from fleet.store.repo import Store
from providers.base import Provider, ProviderInstance


class Reconciler:
    """Owns the listing-grace memory (shared with the view, which counts what it keeps open)."""

    def __init__(self, config: Config, store: Store, providers: Mapping[str, Provider],
                 billing: Callable[[], float]):
        """`billing`: the clock spend is charged to (fleet/clock.py)."""
        self.store = store
        self.providers = providers
        self.grace = ListingGrace()
        self._machines = MachineSync(config, store, providers, self.grace, billing)

    def reconcile(self, listings: Mapping[str, list[ProviderInstance]], now: float) -> None:
        """Only the providers that listed this tick are reconciled: a failed listing changes nothing."""
        rows = self.store.unfinished_machines()
        pending = self.store.pending_actions()
        unconfirmed = self.store.unconfirmed_creates(now - TOKEN_REUSE_S)
        for provider, listing in listings.items():
            creates = {a.token: a for a in (*unconfirmed, *pending)
                       if a.provider == provider and a.kind is ActionKind.CREATE}
            self._machines.sync(provider, listing, [r for r in rows if r.provider == provider], creates, now)
            settle_intents(self.store, listing, [a for a in unconfirmed if a.provider == provider],
                           [a for a in pending if a.provider == provider], now,
                           self.providers[provider].capabilities.idempotent_create)
