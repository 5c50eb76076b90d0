"""The listing-grace rule, written once: a machine missing from a listing still counts
until it has been missing (or, just created, unlisted) for LISTING_GRACE_S."""

from __future__ import annotations

from collections.abc import Iterable

from fleet.model import LISTING_GRACE_S, MachineState
from fleet.store.repo import MachineRow


class ListingGrace:
    """When each open machine was first missed by its provider's listing (in memory: a restart
    starts the clock again, which only ever keeps a machine counted longer)."""

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], float] = {}

    def note_listing(self, provider: str, unlisted: Iterable[str], now: float) -> None:
        """The provider's listing missed these ids: remember since when; forget the listed ones."""
        kept = {k: v for k, v in self._since.items() if k[0] != provider}
        for machine_id in unlisted:
            kept[provider, machine_id] = self._since.get((provider, machine_id), now)
        self._since = kept

    def within(self, row: MachineRow, now: float) -> bool:
        """Whether an unlisted machine is still within its grace (not to be closed yet)."""
        since = self._since.get((row.provider, row.provider_id), now)
        return now - row.created_at < LISTING_GRACE_S or now - since < LISTING_GRACE_S

    def forget(self, row: MachineRow) -> None:
        self._since.pop((row.provider, row.provider_id), None)

    def counts(self, row: MachineRow, now: float) -> bool:
        """Whether an unlisted machine still counts as capacity (and toward the caps): just
        created, or kept open by the last reconcile while the listing misses it."""
        return row.state is not MachineState.TERMINATING and (
            now - row.created_at < LISTING_GRACE_S or (row.provider, row.provider_id) in self._since)
