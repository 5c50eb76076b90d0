"""The leader lease and its fencing token.

One replica acts: it holds the lease `name` until `expires_at`.  A takeover (the lease expired,
or was given back) bumps the lease's `epoch`; renewing keeps it.  While acting, every write the
store makes first renews the lease *under the epoch it was taken with* in the same transaction,
and a replica whose epoch is no longer the lease's gets `LeaseLost` instead of writing: a
replica that lost its lease can neither write nor (since intent is written before every
provider call) act past it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from fleet.store import tables as t
from fleet.store.timefmt import to_dt


class LeaseLost(RuntimeError):
    """The lease was taken over (or expired) under us: this replica must stop acting."""


@dataclass(frozen=True)
class Fence:
    """What a write checks: the lease is still `holder`'s at `epoch`; it renews it for `ttl_s`."""

    name: str
    holder: str
    epoch: int
    ttl_s: float
    clock: Callable[[], float]


def take(engine: Engine, name: str, holder: str, ttl_s: float, now: float) -> int | None:
    """Take or renew the lease until now + ttl: its epoch, or None while another holds it."""
    expires, at = to_dt(now + ttl_s), to_dt(now)
    lease = t.leases.c
    with engine.begin() as conn:
        renewed = conn.execute(update(t.leases).where(and_(
            lease.name == name, lease.holder == holder, lease.expires_at > at)).values(expires_at=expires))
        if not renewed.rowcount:
            conn.execute(update(t.leases).where(and_(lease.name == name, lease.expires_at <= at))
                         .values(holder=holder, expires_at=expires, epoch=lease.epoch + 1))
        row = conn.execute(select(lease.holder, lease.epoch).where(lease.name == name)).first()
    if row is not None:
        return int(row.epoch) if row.holder == holder else None
    try:
        with engine.begin() as conn:
            conn.execute(insert(t.leases).values(name=name, holder=holder, expires_at=expires, epoch=1))
        return 1
    except IntegrityError:
        return None  # another replica inserted it first


def give_back(engine: Engine, name: str, holder: str, now: float) -> None:
    """End the lease now (a clean stop), keeping its epoch so the next holder's is higher."""
    with engine.begin() as conn:
        conn.execute(update(t.leases).where(and_(t.leases.c.name == name, t.leases.c.holder == holder))
                     .values(expires_at=to_dt(now)))


def check(conn: Connection, fence: Fence) -> None:
    """Renew the lease under the fence's epoch, in the caller's transaction, or raise LeaseLost."""
    now = fence.clock()
    lease = t.leases.c
    renewed = conn.execute(update(t.leases).where(and_(
        lease.name == fence.name, lease.holder == fence.holder, lease.epoch == fence.epoch,
        lease.expires_at > to_dt(now))).values(expires_at=to_dt(now + fence.ttl_s)))
    if renewed.rowcount != 1:
        raise LeaseLost(f"lease {fence.name!r} is no longer {fence.holder}'s at epoch {fence.epoch}: "
                        "another replica took it; not writing")
