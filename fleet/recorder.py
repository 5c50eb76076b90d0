"""The recorder: the tick's decisions (with their reasons and what acting said), the spend
ledger, and the pruning of old decisions."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from fleet.clock import BillingClock
from fleet.config import Config
from fleet.model import DESTROY_RETRY_AFTER_S, MachineState, Plan, Reason
from fleet.observe import Observation
from fleet.render import action_json, reason_json, signal_json
from fleet.store.repo import Store, month_start, to_dt
from fleet.telemetry import kv

log = logging.getLogger("fleet")

# Old decision rows are pruned at most this often.
PRUNE_EVERY_S = 3600.0
# Spend is written to the ledger at most this often per machine (month-to-date lags by less).
ACCRUE_EVERY_S = 60.0


# What a column holds: the recommendation is a 32-bit integer on PostgreSQL; a reading or a
# demand sample past this is stored at it (the policy saw the value; the record stays writable).
_INT32 = 2**31 - 1
_FLOAT_BOUND = 1e15


def _int32(value: int) -> int:
    return max(-_INT32, min(_INT32, value))


def _bounded(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return max(-_FLOAT_BOUND, min(_FLOAT_BOUND, value))


class Recorder:
    def __init__(self, config: Config, store: Store, lookback_s: float, billing: BillingClock):
        """`lookback_s`: the longest history the policy reads (never pruned away); `billing`: the
        clock spend is charged to (fleet/clock.py), not the wall clock a step can move."""
        self.config = config
        self.store = store
        self.lookback_s = lookback_s
        self.billing = billing
        self._last_prune = -float("inf")

    def record(self, plan: Plan, notes: Mapping[str, Sequence[Reason]], now: float) -> None:
        rows = []
        for p in plan.pools:
            rows.append({
                "at": to_dt(now), "pool": p.pool, "ready": p.ready, "booting": p.booting, "current": p.current,
                "recommendation": _int32(p.recommendation), "desired": p.desired, "held": p.held,
                "demand_sample": _bounded(p.demand_sample),
                "signals": [{**signal_json(s), "value": _bounded(s.value)} for s in p.signals],
                "reasons": [reason_json(r) for r in (*p.reasons, *notes.get(p.pool, ()))],
                "actions": [action_json(a) for a in p.actions],
            })
            log.info(kv(event="decision", pool=p.pool, ready=p.ready, booting=p.booting, current=p.current,
                        to=p.desired, held=p.held, reason="; ".join(str(r) for r in p.reasons) or "steady"))
        self.store.record_decisions(rows)
        self._prune(now)

    def _prune(self, now: float) -> None:
        if now - self._last_prune < PRUNE_EVERY_S:
            return
        keep_s = self.config.fleet.decisions_retention_days * 86400
        pruned = self.store.prune_decisions(max(0.0, now - max(keep_s, self.lookback_s)))
        self._last_prune = now
        if pruned:
            log.info(kv(event="pruned_decisions", rows=pruned))

    def accrue(self, now: float, obs: Observation | None = None) -> None:
        """Charge live machines up to now, each at most once a minute (the ledger is per hour;
        a machine's last charge, to its end and minimum, is made when it is closed).  A machine
        we asked to destroy is charged to the destroy request, unless the provider still lists
        it when it had time to act (a destroy that failed or hangs): the cloud still bills it."""
        listed = {(name, inst.id) for name, listing in (obs.listings.items() if obs else ())
                  for inst in listing}
        charges = []
        billed_to = self.billing()
        for row in self.store.unfinished_machines():
            until = billed_to
            if row.state is MachineState.TERMINATING and row.terminating_at is not None and (
                    (row.provider, row.provider_id) not in listed
                    or now - row.terminating_at < DESTROY_RETRY_AFTER_S):
                until = min(row.terminating_at, billed_to)
            if until - row.accrued_until >= ACCRUE_EVERY_S:
                charges.append((row, until, None))
        self.store.accrue_many(charges)
        self.store.save_billing_anchor(self.billing.anchor())

    def spend_month_to_date(self, now: float) -> dict[str, float]:
        spent = self.store.spend_since(month_start(now))
        return {pool: float(amount) for pool, amount in spent.items()}
