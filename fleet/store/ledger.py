"""The spend ledger: per-machine, per-hour rows charged on the billing clock (fleet/clock.py),
and where that clock stood at the last accrual.  A mixin of `Store` (its engine and its fenced
write transactions)."""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from fleet.store import tables as t
from fleet.store.timefmt import to_dt
from fleet.store.timefmt import ts_of as _ts

if TYPE_CHECKING:
    from fleet.store.repo import MachineRow


@dataclass(frozen=True)
class BillingAnchor:
    """The ledger's clock at an accrual: billed to `billed_to`, read at `wall_at` and, on the
    host boot `boot`, at `monotonic_at`."""

    billed_to: float
    wall_at: float
    monotonic_at: float
    boot: str


class Ledger:
    engine: Engine

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

    def accrue(self, machine: MachineRow, until: float, min_seconds: float | None = None) -> None:
        """Charge `machine` from where it was last charged up to `until`, in per-hour ledger rows.

        With `min_seconds` (the machine is gone), also charge up to the provider's minimum.
        """
        self.accrue_many([(machine, until, min_seconds)])

    def accrue_many(self, charges: Iterable[tuple[MachineRow, float, float | None]]) -> None:
        """`accrue` for many machines in one transaction (a tick charges every live machine)."""
        with self._begin() as conn:
            for machine, until, min_seconds in charges:
                start = machine.accrued_until
                end = max(until, start)
                if min_seconds is not None:  # its last charge: at least the provider's minimum in all
                    billed = conn.execute(select(func.coalesce(func.sum(t.spend_ledger.c.seconds), 0.0)).where(
                        t.spend_ledger.c.machine_id == machine.id)).scalar()
                    end += max(0.0, min_seconds - float(billed or 0.0) - (end - start))
                if end <= start:
                    continue
                price = Decimal(str(machine.price_hourly_usd))
                cursor = start
                while cursor < end:
                    hour = math.floor(cursor / 3600.0) * 3600.0
                    stop = min(end, hour + 3600.0)
                    seconds = stop - cursor
                    amount = (price * Decimal(str(seconds)) / Decimal(3600)).quantize(Decimal("0.000001"))
                    key = and_(t.spend_ledger.c.machine_id == machine.id,
                               t.spend_ledger.c.hour_start == to_dt(hour))
                    changed = conn.execute(update(t.spend_ledger).where(key).values(
                        seconds=t.spend_ledger.c.seconds + seconds,
                        amount_usd=t.spend_ledger.c.amount_usd + amount)).rowcount
                    if not changed:
                        conn.execute(insert(t.spend_ledger).values(
                            machine_id=machine.id, pool=machine.pool, hour_start=to_dt(hour), seconds=seconds,
                            amount_usd=amount))
                    cursor = stop
                conn.execute(update(t.machines).where(t.machines.c.id == machine.id)
                             .values(accrued_until=to_dt(end)))

    def billing_anchor(self, name: str = "ledger") -> BillingAnchor | None:
        """Where the last accrual left the ledger's clock, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.billing_clock).where(t.billing_clock.c.name == name)).first()
        if row is None:
            return None
        return BillingAnchor(_ts(row.billed_to), _ts(row.wall_at), float(row.monotonic_at), row.boot)

    def save_billing_anchor(self, anchor: BillingAnchor, name: str = "ledger") -> None:
        with self._begin() as conn:
            key = t.billing_clock.c.name == name
            values = {"billed_to": to_dt(anchor.billed_to), "wall_at": to_dt(anchor.wall_at),
                      "monotonic_at": anchor.monotonic_at, "boot": anchor.boot}
            if not conn.execute(update(t.billing_clock).where(key).values(**values)).rowcount:
                conn.execute(insert(t.billing_clock).values(name=name, **values))

    def spend_since(self, since: float) -> dict[str, Decimal]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.spend_ledger.c.pool, func.sum(t.spend_ledger.c.amount_usd))
                                .where(t.spend_ledger.c.hour_start >= to_dt(since))
                                .group_by(t.spend_ledger.c.pool)).all()
        out: dict[str, Decimal] = defaultdict(Decimal)
        for pool, amount in rows:
            out[pool] += Decimal(str(amount or 0))
        return dict(out)



def month_start(now: float) -> float:
    dt = to_dt(now)
    return datetime(dt.year, dt.month, 1, tzinfo=UTC).timestamp()
