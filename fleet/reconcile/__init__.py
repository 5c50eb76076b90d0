"""Reconcile: mirror provider truth into the database before anything is decided.

Per provider listing, two passes: the machine sync (adopt, follow, close, with the
listing-grace memory) and the intent-log settlement (actions whose answer was lost).
"""

from fleet.reconcile.grace import LISTING_GRACE_S, ListingGrace
from fleet.reconcile.intents import TOKEN_REUSE_S
from fleet.reconcile.reconciler import Reconciler

__all__ = ["LISTING_GRACE_S", "TOKEN_REUSE_S", "ListingGrace", "Reconciler"]
