"""The intent-log settlement: actions whose outcome was never recorded (the controller died
mid-call) or whose answer was lost are closed from what the listing shows."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.model import ActionKind, ActionStatus
from fleet.reconcile.grace import LISTING_GRACE_S
from fleet.store.repo import ActionRow, Store
from providers.base import ProviderInstance

# An unconfirmed create's token is reused, and its machines adopted, for this long (EC2 dedupes
# on ClientToken).
TOKEN_REUSE_S = 600.0


def carrying(listing: Sequence[ProviderInstance], token: str) -> int:
    """How many listed machines carry an action's token."""
    return sum(1 for inst in listing if inst.token == token)


def settle_intents(store: Store, listing: Sequence[ProviderInstance], unconfirmed: Sequence[ActionRow],
                   pending: Sequence[ActionRow], now: float, idempotent: bool) -> None:
    """Settle one provider's actions against its listing.  A create nothing carries the token
    of is lost at once where the provider dedupes creates (the retry under the same token gets
    the lost call's machines), else only once the listing grace has passed."""
    for action in unconfirmed:  # failed or lost creates: a machine with their token proves otherwise
        found = carrying(listing, action.token)
        if found:
            store.mark_adopted(action.id, now, found)
    for action in pending:
        if action.kind is not ActionKind.CREATE:
            store.finish_action(action.id, ActionStatus.LOST, now, "outcome unrecorded; the machines' "
                                "TERMINATING state drives the retry")
            continue
        found = carrying(listing, action.token)
        if found:
            store.finish_action(action.id, ActionStatus.ADOPTED, now, f"adopted {found} machine(s) after an "
                                "unrecorded outcome", launched=found)
        elif not idempotent and now - action.created_at < LISTING_GRACE_S:
            continue  # its machines may not be listed yet: still in flight (the view counts them)
        else:
            store.finish_action(action.id, ActionStatus.LOST, now, "no machine carries this token: the create "
                                "did not happen or is not listed yet")
