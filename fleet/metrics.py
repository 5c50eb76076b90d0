"""Prometheus metrics of the tick, on a registry of their own (one per controller)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ticks = Counter("fleet_ticks", "Ticks run, by outcome", ["outcome"], registry=r)
        self.tick_seconds = Histogram("fleet_tick_duration_seconds", "Wall time of one tick", registry=r,
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.desired = Gauge("fleet_pool_desired_machines", "Machines the last decision wanted", ["pool"],
                             registry=r)
        self.demand = Gauge("fleet_pool_demand_machines", "Latency pools: the work in the pool, in machines "
                            "(queued + running / slots_per_machine), as the policy read it", ["pool"], registry=r)
        self.machines = Gauge("fleet_pool_machines", "Machines by pool and state", ["pool", "state"],
                              registry=r)
        self.held = Gauge("fleet_pool_held", "1 when the pool was held last tick", ["pool"], registry=r)
        self.burn = Gauge("fleet_burn_usd_per_hour", "Hourly price of every billed machine", registry=r)
        self.unmanaged = Gauge("fleet_unmanaged_machines", "Machines tagged for this fleet whose pool is not in "
                               "the config: billed, scaled by no pool", ["pool"], registry=r)
        self.spend_mtd = Gauge("fleet_spend_month_to_date_usd", "Month-to-date spend from the ledger",
                               ["pool"], registry=r)
        self.provider_errors = Counter("fleet_provider_errors", "Provider errors by kind",
                                       ["provider", "kind"], registry=r)
        self.signal_missing = Gauge("fleet_signal_missing", "1 when a signal was missing last tick",
                                    ["pool", "signal"], registry=r)
        self.machine_work = Gauge("fleet_pool_machine_work", "Pools with machine_work: ready machines by what "
                                  "their per-machine reading said (busy, idle, unread, silent; all unread "
                                  "when the query failed)", ["pool", "reading"], registry=r)
        self.last_success = Gauge("fleet_last_successful_tick_timestamp_seconds",
                                  "When the last tick completed", registry=r)
