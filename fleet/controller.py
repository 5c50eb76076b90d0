"""The tick: observe → reconcile → decide → act → record, under the lease.

A dry run (`fleet plan`, or a standby replica) observes and decides only: no provider
mutation, no database write.  The controller keeps the order of the steps and the lease,
nothing else: each step is a room of its own (fleet/observe.py, fleet/reconcile/,
fleet/view.py, fleet/work.py, fleet/executor.py, fleet/recorder.py, fleet/telemetry.py),
built by fleet/wiring.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from fleet.clock import BillingClock
from fleet.config import Config
from fleet.executor import Executor, Notes
from fleet.lease_keeper import LeaseKeeper
from fleet.metrics import Metrics
from fleet.model import VANISHED_COUNTS_S, Plan, TickResult
from fleet.observe import Observation, SignalReader, observe
from fleet.policy import decide, lookback_s, reads_previous_tick
from fleet.reconcile import Reconciler
from fleet.recorder import Recorder
from fleet.store.lease import Fence, LeaseLost
from fleet.store.repo import Store
from fleet.telemetry import Telemetry, kv
from fleet.view import FleetViewer
from fleet.work import WorkTracker
from providers.base import Provider

log = logging.getLogger("fleet")

LEASE = "controller"


class Controller:
    def __init__(self, config: Config, store: Store, providers: Mapping[str, Provider], signals: SignalReader,
                 metrics: Metrics, clock: Callable[[], float], holder: str,
                 monotonic: Callable[[], float] = time.monotonic, renew_every_s: float | None = None,
                 boot: str = "unknown"):
        self.config = config
        self.store = store
        self.providers = dict(providers)
        self.metrics = metrics
        self.clock = clock
        self.holder = holder
        self.last_success_at: float | None = None
        self.telemetry = Telemetry(metrics)
        billing = BillingClock(clock, monotonic, boot, store.billing_anchor)
        self.reconciler = Reconciler(config, store, self.providers, billing)
        self.work = WorkTracker()
        self.viewer = FleetViewer(config, self.providers, self.reconciler.grace, self.work)
        self.executor = Executor(config, store, self.providers, signals, self.work, self.telemetry, clock, billing)
        self.recorder = Recorder(config, store, max((lookback_s(p) for p in config.pools), default=0.0), billing)
        self._signals = signals
        self.keeper = LeaseKeeper(store, renew_every_s or config.fleet.lease_seconds / 3)

    def tick(self, dry_run: bool = False) -> TickResult:
        started = time.perf_counter()
        try:
            result = self._tick(self.clock(), dry_run)
        except Exception:
            self.telemetry.tick_done(False, time.perf_counter() - started)
            raise
        self.last_success_at = self.clock()
        self.telemetry.tick_done(True, time.perf_counter() - started, self.last_success_at)
        return result

    def _tick(self, now: float, dry_run: bool) -> TickResult:
        notes = Notes()
        try:
            acting = not dry_run and self._lease(now)
            obs = observe(self.config, self.providers, self._signals, self.telemetry)
            acting = acting and self._fenced(lambda: self._reconcile(obs, now))
            plan = self._decide(obs, now)
            # the tick may have outlasted the lease: another replica took it and acts now, not us
            if acting and self._lease(self.clock(), renewing=True):
                with self.keeper:
                    acting = self._fenced(lambda: self._act(plan, obs, now, notes))
            else:
                acting = False
        finally:
            self.store.fence = None
        self.telemetry.plan(plan, acting, self.work.counts)
        if acting:
            self.telemetry.spend(self.recorder.spend_month_to_date(self.clock()))
        return TickResult(plan=plan, dry_run=not acting, notes=notes.frozen())

    def _decide(self, obs: Observation, now: float) -> Plan:
        fleet = self.viewer.view(obs, self.store.unfinished_machines(), self.store.in_flight_creates(now), now,
                                 self.store.recently_vanished(now - VANISHED_COUNTS_S))
        self.telemetry.unmanaged(fleet.unmanaged)
        pools = self.config.pools
        history = self.store.history({p.name: lookback_s(p) for p in pools}, now,
                                     previous={p.name for p in pools if reads_previous_tick(p)})
        return decide(self.config, fleet, obs.signals, history, now)

    def _reconcile(self, obs: Observation, now: float) -> None:
        self.store.repair_future(now)  # a wall clock that ran ahead left times that never came
        self.reconciler.reconcile(obs.listings, now)

    def _fenced(self, step: Callable[[], None]) -> bool:
        """Run a step that writes; False when the lease was lost under it (nothing more is written)."""
        try:
            step()
            return True
        except LeaseLost as exc:
            log.warning(kv(event="lease_lost", holder=self.holder, reason=str(exc)))
            return False

    def _act(self, plan: Plan, obs: Observation, now: float, notes: Notes) -> None:
        """Act, then record: the decision and the spend are written even when acting fails, and
        the spend even when the decision cannot be."""
        try:
            self.executor.retry_destroys(obs, now, notes)
            self.executor.retry_drain_marks(obs, notes)
            self.executor.act(plan, obs, now, notes)
        finally:
            try:
                self.recorder.record(plan, notes.frozen(), now)
            finally:
                self.recorder.accrue(self.clock(), obs)

    def _lease(self, now: float, renewing: bool = False) -> bool:
        """Take the lease (or renew it, under the epoch this tick took it with): while held, the
        store fences every write with its epoch.  False (and why, logged) when another replica
        holds it."""
        epoch = self.store.try_lease(LEASE, self.holder, self.config.fleet.lease_seconds, now)
        if epoch is not None and (not renewing or (self.store.fence and self.store.fence.epoch == epoch)):
            self.store.fence = Fence(LEASE, self.holder, epoch, self.config.fleet.lease_seconds, self.clock)
            return True
        self.store.fence = None
        if renewing:
            log.warning(kv(event="lease_lost", holder=self.holder, reason="the tick outlasted the lease; "
                           "another replica took it: not acting"))
        else:
            log.info(kv(event="standby", holder=self.holder, reason="another replica holds the lease"))
        return False

    def close(self) -> None:
        """Stop the parts the controller was handed that hold threads (the signal reader)."""
        self._signals.close()

    def release_lease(self) -> None:
        """Give the lease back on a clean stop, so the next process acts at once."""
        self.store.release_lease(LEASE, self.holder, self.clock())

    def spend_month_to_date(self, now: float | None = None) -> dict[str, float]:
        return self.recorder.spend_month_to_date(self.clock() if now is None else now)


__all__ = ["Controller", "TickResult"]
