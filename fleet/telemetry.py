"""Telemetry: the tick's metrics and its key/value log lines.

One object per controller: it owns the memory that keeps a warning from repeating every
tick (the unmanaged machines last reported) and exports what a tick decided.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from fleet.metrics import Metrics
from fleet.model import Machine, Plan
from providers.base import ProviderError

log = logging.getLogger("fleet")

WORK_READINGS = ("busy", "idle", "unread", "silent")


def kv(**fields: Any) -> str:
    """One key/value log line; values with spaces are quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f'{key}="{text}"' if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


class Telemetry:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._unmanaged_ids: frozenset[str] = frozenset()
        self._unmanaged_pools: set[str] = set()

    def provider_error(self, provider: str, exc: ProviderError) -> None:
        self.metrics.provider_errors.labels(provider, exc.kind).inc()
        log.warning(kv(event="provider_error", provider=provider, kind=exc.kind, error=str(exc)[:300]))

    def destroy_timeout(self, provider: str) -> None:
        self.metrics.provider_errors.labels(provider, "destroy_timeout").inc()

    def unmanaged(self, unmanaged: tuple[Machine, ...]) -> None:
        """A gauge per unconfigured pool, and a warning whenever the set of such machines changes
        (each tick would flood the log)."""
        by_pool = Counter(m.pool for m in unmanaged)
        for pool in self._unmanaged_pools - set(by_pool):
            self.metrics.unmanaged.labels(pool).set(0)
        for pool, count in by_pool.items():
            self.metrics.unmanaged.labels(pool).set(count)
        self._unmanaged_pools = set(by_pool)
        ids = frozenset(m.id for m in unmanaged)
        if ids and ids != self._unmanaged_ids:
            log.warning(kv(event="unmanaged_machines", count=len(ids),
                           pools=",".join(f"{p}:{n}" for p, n in sorted(by_pool.items())),
                           burn_usd_per_hour=round(sum(m.price_hourly_usd for m in unmanaged), 2),
                           unpriced=sum(1 for m in unmanaged if not m.price_hourly_usd),
                           reason="tagged for this fleet but their pool is not in the config (or is now on "
                                  "another provider): no pool scales them; their burn counts toward [budget] "
                                  "max_hourly_usd until they are destroyed (put the pool back with "
                                  "min = max = 0 to have fleet do it)"))
        self._unmanaged_ids = ids

    def plan(self, plan: Plan, acted: bool, work_counts: dict[str, Counter[str]]) -> None:
        """The pools' gauges from this tick's plan (the planned burn when it was acted on)."""
        m = self.metrics
        m.burn.set(plan.burn_planned_usd_per_hour if acted else plan.burn_now_usd_per_hour)
        for p in plan.pools:
            m.desired.labels(p.pool).set(p.desired)
            if p.demand_sample is not None:
                m.demand.labels(p.pool).set(p.demand_sample)
            m.held.labels(p.pool).set(1 if p.held else 0)
            m.machines.labels(p.pool, "ready").set(p.ready)
            m.machines.labels(p.pool, "booting").set(p.booting)
            m.machines.labels(p.pool, "draining").set(p.draining)
            for s in p.signals:
                m.signal_missing.labels(p.pool, s.name).set(1 if s.missing else 0)
            counts = work_counts.get(p.pool)
            if counts is not None:
                for reading in WORK_READINGS:
                    m.machine_work.labels(p.pool, reading).set(counts[reading])

    def spend(self, month_to_date: dict[str, float]) -> None:
        for pool, amount in month_to_date.items():
            self.metrics.spend_mtd.labels(pool).set(amount)

    def tick_done(self, ok: bool, seconds: float, at: float | None = None) -> None:
        self.metrics.ticks.labels("ok" if ok else "error").inc()
        self.metrics.tick_seconds.observe(seconds)
        if at is not None:
            self.metrics.last_success.set(at)
