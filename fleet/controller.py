"""The tick: observe → reconcile → decide → act → record.

The provider's tagged listing is the truth; the database is the memory.  Intent
is committed before every provider call and the outcome after, so a crash at
any point is repaired by the next tick's reconcile: machines carrying the token
of an unfinished action are adopted, machines gone from the listing are closed,
and nothing is created twice.  `fleet plan` runs observe and decide only (no
provider mutation, no database write).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.cloud import build_providers, launch_price, launch_target, size_price
from fleet.config import Config, PoolConfig
from fleet.metrics import Metrics
from fleet.model import (
    ActionStatus,
    CreateAction,
    DestroyAction,
    DrainAction,
    Fleet,
    Machine,
    MachineState,
    Plan,
    PoolPlan,
    PoolView,
    SignalReading,
    UndrainAction,
)
from fleet.policy import decide
from fleet.policy.latency import history_window_s, reads_previous_tick
from fleet.signals.collect import read_everything, read_pool_machine_work
from fleet.signals.machine_work import MachineWorkReading
from fleet.store.db import ensure_schema, make_engine
from fleet.store.repo import MachineRow, Store, month_start, to_dt
from providers.base import (
    AuthError,
    InstanceStatus,
    LaunchSpec,
    Provider,
    ProviderError,
    ProviderInstance,
)

log = logging.getLogger("fleet")

# A machine we created may take a moment to appear in an eventually consistent listing, and
# a listing may miss a machine for a moment: one is closed only when missing this long.
LISTING_GRACE_S = 60.0
# Creates that keep failing for a reason other than capacity (a bad image, a bad subnet) are
# retried after tick_seconds x 2^(failures-1), at most this long, not every tick.
CREATE_BACKOFF_MAX_S = 900.0
# Old decision rows are pruned at most this often.
PRUNE_EVERY_S = 3600.0
# Spend is written to the ledger at most this often per machine (month-to-date lags by less).
ACCRUE_EVERY_S = 60.0
# A machine still listed this long after its destroy request is asked again.
DESTROY_RETRY_AFTER_S = 30.0
# An unconfirmed create's token is reused for this long (EC2 dedupes on ClientToken).
TOKEN_REUSE_S = 600.0

_STATUS_TO_STATE = {
    InstanceStatus.BOOTING: MachineState.BOOTING,
    InstanceStatus.READY: MachineState.READY,
    InstanceStatus.TERMINATING: MachineState.TERMINATING,
    InstanceStatus.STOPPED: MachineState.FAILED,
}


@dataclass
class Observation:
    """What one tick saw: provider listings (or their errors), prices, quota, signals."""

    listings: dict[str, list[ProviderInstance]] = field(default_factory=dict)
    listing_errors: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # provider → auth error message
    signals: dict[str, tuple[SignalReading, ...]] = field(default_factory=dict)
    machine_work: dict[str, MachineWorkReading] = field(default_factory=dict)  # pools that read it
    headroom: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    launch_price: dict[str, float | None] = field(default_factory=dict)


@dataclass
class TickResult:
    plan: Plan
    dry_run: bool
    notes: dict[str, list[str]] = field(default_factory=dict)  # pool → what acting said
    errors: list[str] = field(default_factory=list)


def kv(**fields: Any) -> str:
    """One key/value log line; values with spaces are quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f'{key}="{text}"' if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


class Controller:
    def __init__(self, config: Config, providers: Mapping[str, Provider] | None = None,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 store: Store | None = None, holder: str | None = None):
        self.config = config
        self.clock = clock
        self.store = store or Store(make_engine(config.fleet.database_url))
        ensure_schema(self.store.engine)
        self.providers: dict[str, Provider] = dict(providers) if providers is not None else build_providers(
            config, clock)
        self.metrics = metrics or Metrics()
        self.last_success_at: float | None = None
        self._last_prune = -float("inf")
        self._unmanaged_ids: frozenset[str] = frozenset()
        self._unmanaged_pools: set[str] = set()
        # (provider, machine id) -> when a listing first missed a machine we still hold open
        self._missing_since: dict[tuple[str, str], float] = {}
        # (provider, machine id) -> when its per-machine work was last read (or first looked for)
        self._work_seen_at: dict[tuple[str, str], float] = {}
        self._work_counts: dict[str, Counter[str]] = {}  # pool -> ready machines by reading, for metrics
        # One holder per process: two processes on one host (a service and a `fleet run --once`)
        # must not both act.  A clean stop gives the lease back (`release_lease`), so a restart
        # acts at once; after a crash it waits for the lease to expire.
        self.holder = holder or os.environ.get("FLEET_REPLICA_ID") or f"{socket.gethostname()}:{os.getpid()}"

    # ------------------------------------------------------------ the tick

    def tick(self, dry_run: bool = False) -> TickResult:
        started = time.perf_counter()
        now = self.clock()
        try:
            if not dry_run and not self.store.try_lease("controller", self.holder,
                                                         self.config.fleet.lease_seconds, now):
                dry_run = True  # another replica holds the lease: observe and plan, never act
                log.info(kv(event="standby", holder=self.holder, reason="another replica holds the lease"))
            obs = self.observe()
            if not dry_run:
                self.reconcile(obs, now)
            fleet = self.fleet_view(obs, now)
            history = self.store.history({p.name: self._lookback(p) for p in self.config.pools}, now,
                                         previous={p.name for p in self.config.pools if reads_previous_tick(p)})
            plan = decide(self.config, fleet, obs.signals, history, now)
            if not dry_run and not self.store.try_lease("controller", self.holder,
                                                         self.config.fleet.lease_seconds, self.clock()):
                # the tick outlasted the lease and another replica took it: it acts now, not us
                dry_run = True
                log.warning(kv(event="lease_lost", holder=self.holder, reason="the tick outlasted the lease; "
                               "another replica took it: not acting"))
            result = TickResult(plan=plan, dry_run=dry_run)
            if not dry_run:
                self.retry_destroys(obs, now, result)
                self.retry_drain_marks(obs, result)
                self.act(plan, obs, now, result)
                self.record(plan, result, now)
                self.accrue(self.clock(), obs)
            self._export(plan, obs, result)
            self.metrics.ticks.labels("ok").inc()
            self.last_success_at = self.clock()
            self.metrics.last_success.set(self.last_success_at)
            return result
        except Exception:
            self.metrics.ticks.labels("error").inc()
            raise
        finally:
            self.metrics.tick_seconds.observe(time.perf_counter() - started)

    def _longest_lookback(self) -> float:
        return max((self._lookback(p) for p in self.config.pools), default=0.0)

    def _lookback(self, pool: PoolConfig) -> float:
        """How much decision history the policy reads: the stabilization window, or the latency
        policy's own window (its demand history, so a restart keeps what it learned)."""
        if pool.latency_budget_s is not None:
            return history_window_s(pool)
        return max(pool.scale_down_stabilization_s, 60.0)

    # ------------------------------------------------------------ 1 observe

    def observe(self) -> Observation:
        obs = Observation()
        for name, provider in self.providers.items():
            try:
                obs.listings[name] = provider.list_instances(self.config.fleet.name)
            except AuthError as exc:
                obs.blocked[name] = f"{name}: authentication failed, not acting on this provider: {exc}"
                self._provider_error(name, exc)
            except ProviderError as exc:
                obs.listing_errors[name] = f"listing {name} machines failed ({exc.kind}): {exc}"
                self._provider_error(name, exc)
        obs.signals, obs.machine_work = read_everything(self.config.pools)
        for pool in self.config.pools:
            provider = self.providers.get(pool.provider)
            if provider is None or pool.provider in obs.blocked:
                continue
            obs.launch_price[pool.name] = launch_price(pool, provider)
            try:
                room = provider.headroom(launch_target(self.config, pool))
                obs.headroom[pool.name] = (room.machines, room.note)
            except ProviderError as exc:
                self._provider_error(pool.provider, exc)
                obs.headroom[pool.name] = (None, f"quota unknown ({exc.kind}: {exc}): the pool's max applies")
        return obs

    # ------------------------------------------------------------ 2 reconcile

    def reconcile(self, obs: Observation, now: float) -> None:
        rows = self.store.unfinished_machines()
        pending = self.store.pending_actions()
        unconfirmed = self.store.unconfirmed_creates(now - TOKEN_REUSE_S)
        for provider_name, listing in obs.listings.items():
            known = {r.provider_id: r for r in rows if r.provider == provider_name}
            listed = {inst.id: inst for inst in listing}
            tokens = {a.token: a for a in (*unconfirmed, *pending)
                      if a.provider == provider_name and a.kind == "create"}
            for inst in listing:
                row = known.get(inst.id)
                if row is None:
                    self._adopt(provider_name, inst, tokens.get(inst.token or ""), now)
                else:
                    self._follow(row, inst, now)
            missing = {k: v for k, v in self._missing_since.items() if k[0] != provider_name}
            for row in known.values():
                if row.provider_id in listed:
                    continue
                if row.state is not MachineState.TERMINATING:
                    # Just created (the listing may not show it yet), or missed by this listing
                    # only lately: an eventually consistent listing drops machines for a moment,
                    # and closing one that is still there would buy its replacement.
                    since = missing[provider_name, row.provider_id] = self._missing_since.get(
                        (provider_name, row.provider_id), now)
                    if now - row.created_at < LISTING_GRACE_S or now - since < LISTING_GRACE_S:
                        continue
                    del missing[provider_name, row.provider_id]
                reason = ("destroyed: gone from the provider listing" if row.state is MachineState.TERMINATING
                          else "vanished from the provider listing (deleted outside fleet or reclaimed)")
                end = row.terminating_at if row.terminating_at is not None else now
                self.store.accrue(row, end, min_seconds=self._billing(provider_name).min_seconds)
                self.store.move(row, MachineState.TERMINATED, now, reason)
                log.info(kv(event="machine_closed", pool=row.pool, machine=row.provider_id, reason=reason))
            self._missing_since = missing
            for action in unconfirmed:
                found = sum(1 for inst in listing if inst.token == action.token)
                if action.provider == provider_name and found:
                    self.store.mark_adopted(action.id, now, found)
            # Actions whose outcome was never recorded (the controller died mid-call).
            for action in pending:
                if action.provider != provider_name:
                    continue
                if action.kind == "create":
                    found = sum(1 for inst in listing if inst.token == action.token)
                    if found:
                        self.store.finish_action(action.id, "adopted", now, f"adopted {found} machine(s) after "
                                                 "an unrecorded outcome", launched=found)
                    else:
                        self.store.finish_action(action.id, "lost", now, "no machine carries this token: the "
                                                 "create did not happen or is not listed yet")
                else:
                    self.store.finish_action(action.id, "lost", now, "outcome unrecorded; the machines' "
                                             "TERMINATING state drives the retry")

    def _adopt(self, provider_name: str, inst: ProviderInstance, action: Any, now: float) -> None:
        closed = self.store.closed_machine(provider_name, inst.id)
        if closed is not None:
            # closed while a listing missed it, and listed again: the same machine, the same row;
            # one we had asked to destroy stays on its way out (its destroy is asked again)
            if closed.terminating_at is not None:
                self.store.move(closed, MachineState.TERMINATING, now, "listed again after its destroy: "
                                "asking again", terminating_at=to_dt(closed.terminating_at))
            else:
                self.store.move(closed, _STATUS_TO_STATE[inst.status], now,
                                "listed again after it was closed: a listing missed it")
            log.warning(kv(event="machine_reappeared", pool=inst.pool, machine=inst.id))
            return
        pool_cfg = self._pool_cfg(inst.pool)
        price = inst.price_hourly_usd
        if pool_cfg is not None:
            price = size_price(pool_cfg, self.providers[provider_name], inst.size, inst.region) or price
        state = _STATUS_TO_STATE[inst.status]
        reason = (f"adopted: created by action {action.token} whose answer never reached us" if action
                  else f"adopted: tagged fleet:{self.config.fleet.name} but unknown to the database")
        if pool_cfg is None:
            reason += f" (pool {inst.pool!r} is not in the config)"
        created = inst.created_at.timestamp() if inst.created_at else now
        self.store.add_machine(provider=provider_name, provider_id=inst.id, pool=inst.pool, state=state,
                               size=inst.size, region=inst.region, price_hourly_usd=price or 0.0,
                               token=inst.token, spot=inst.spot, created_at=min(created, now), now=now,
                               reason=reason)
        log.warning(kv(event="machine_adopted", pool=inst.pool, machine=inst.id, reason=reason))

    def _follow(self, row: MachineRow, inst: ProviderInstance, now: float) -> None:
        """Move a known machine to the state its provider reports."""
        seen = _STATUS_TO_STATE[inst.status]
        if row.state is MachineState.TERMINATING or seen is row.state:
            return  # we asked for its end; the listing catches up
        if row.state is MachineState.DRAINING and seen in (MachineState.READY, MachineState.BOOTING):
            return  # draining: running, and ours to end
        if row.state is MachineState.FAILED and seen is not MachineState.TERMINATING:
            return
        reason = {MachineState.READY: "provider reports it ready",
                  MachineState.BOOTING: "provider reports it booting",
                  MachineState.TERMINATING: "provider reports it terminating",
                  MachineState.FAILED: f"provider reports it {inst.status.value}: not serving, still billed"}[seen]
        self.store.move(row, seen, now, reason)

    # ------------------------------------------------------------ the view decide sees

    def fleet_view(self, obs: Observation, now: float) -> Fleet:
        rows = self.store.unfinished_machines()
        views: dict[str, PoolView] = {}
        seen_at: dict[tuple[str, str], float] = {}  # the next _work_seen_at: machines gone drop out
        for pool in self.config.pools:
            listing = obs.listings.get(pool.provider)
            pool_rows = {r.provider_id: r for r in rows if r.provider == pool.provider and r.pool == pool.name}
            if listing is None:
                machines = tuple(_machine_from_row(r) for r in pool_rows.values())
            else:
                listed = [inst for inst in listing if inst.pool == pool.name]
                machines = tuple(self._machine(pool, inst, pool_rows.get(inst.id), now) for inst in listed)
                # Just created and not listed yet, or missed by this listing for a moment (an
                # eventually consistent listing): still capacity, or the next decision would
                # launch the same machines again.
                seen = {inst.id for inst in listed}
                machines += tuple(_machine_from_row(r) for r in pool_rows.values()
                                  if r.provider_id not in seen and r.state is not MachineState.TERMINATING
                                  and (now - r.created_at < LISTING_GRACE_S
                                       or (pool.provider, r.provider_id) in self._missing_since))
            work_note = None
            if pool.machine_work is not None:
                machines, work_note = self._with_work(pool, machines, listing or [], obs.machine_work.get(pool.name),
                                                      now, seen_at)
            headroom, note = obs.headroom.get(pool.name, (None, ""))
            views[pool.name] = PoolView(
                name=pool.name, machines=machines, machine_work=work_note,
                listing_error=obs.listing_errors.get(pool.provider)
                or (None if pool.provider in self.providers or pool.provider in obs.blocked
                    else f"provider {pool.provider} is not available"),
                provider_blocked=obs.blocked.get(pool.provider),
                headroom=headroom, headroom_note=note, launch_price_hourly_usd=obs.launch_price.get(pool.name),
            )
        self._work_seen_at = seen_at
        # a pool removed, renamed, or moved to another provider leaves machines no view holds
        configured = {(p.provider, p.name) for p in self.config.pools}
        unmanaged = tuple(_machine_from_row(r) for r in rows if (r.provider, r.pool) not in configured)
        self._report_unmanaged(unmanaged)
        return Fleet(pools=views, unmanaged=unmanaged)

    def _with_work(self, pool: PoolConfig, machines: tuple[Machine, ...], listing: list[ProviderInstance],
                   reading: MachineWorkReading | None, now: float, seen_at: dict[tuple[str, str], float],
                   ) -> tuple[tuple[Machine, ...], str]:
        """Each ready machine's work from the pool's per-machine reading, and a summary."""
        cfg = pool.machine_work
        assert cfg is not None
        key_of, matched = _work_keys(pool, listing, reading)
        out: list[Machine] = []
        counts: Counter[str] = Counter()
        for m in machines:
            if m.state not in (MachineState.READY, MachineState.DRAINING):
                out.append(m)
                continue
            work, kind = self._work_of(pool, m.id, key_of(m.id), reading, matched, now, seen_at)
            if m.state is MachineState.READY:
                counts[kind] += 1
            out.append(replace(m, work_left=work))
        self._work_counts[pool.name] = counts
        where = reading.source if reading is not None else "per-machine work"
        if reading is None or reading.work is None:
            why = reading.error if reading is not None else "not read"
            return tuple(out), (f"{where}: missing ({why}); no ready machine is known to be idle, none is "
                                f"removed")
        parts = [f"{counts[k]} {k}" for k in ("busy", "idle", "unread", "silent") if counts[k]]
        text = ", ".join(parts) or "no ready machine"
        if counts["unread"] and not matched:
            text += (f" (no series matches any machine of the pool by its {cfg.match}: check `match` and "
                     f"`label`; none is removed)")
        elif counts["unread"]:
            text += (f" (unread: no series matches its {cfg.match}; kept as busy until unread for "
                     f"{cfg.unread_idle_after_s:g}s)")
        if counts["silent"]:
            text += f" (silent: unread for {cfg.unread_idle_after_s:g}s or more, counted idle)"
        return tuple(out), f"{where}: {text}"

    def _work_of(self, pool: PoolConfig, machine_id: str, key: str | None, reading: MachineWorkReading | None,
                 matched: bool, now: float, seen_at: dict[tuple[str, str], float]) -> tuple[float, str]:
        """(work, kind): the reading for the machine; inf ("unread") when none, or 0 ("silent")
        once the query, matching other machines of the pool (`matched`), has shown none for it
        for unread_idle_after_s."""
        cfg = pool.machine_work
        assert cfg is not None
        at = (pool.provider, machine_id)
        if reading is None or reading.work is None:
            seen_at[at] = now  # no evidence either way: the unread clock does not run
            return math.inf, "unread"
        if key is not None and key in reading.work:
            seen_at[at] = now
            work = reading.work[key]
            return work, ("busy" if work > 0 else "idle")
        if key is not None and key in reading.unreadable:
            seen_at[at] = now  # its server answers, with a NaN: alive, its work unknown
            return math.inf, "unread"
        if not matched:
            # no machine of the pool matches (a wrong `match` or `label`): no evidence it is gone
            seen_at[at] = now
            return math.inf, "unread"
        since = seen_at[at] = self._work_seen_at.get(at, now)
        if now - since >= cfg.unread_idle_after_s:
            return 0.0, "silent"
        return math.inf, "unread"

    def _report_unmanaged(self, unmanaged: tuple[Machine, ...]) -> None:
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
            unpriced = sum(1 for m in unmanaged if not m.price_hourly_usd)
            log.warning(kv(event="unmanaged_machines", count=len(ids),
                           pools=",".join(f"{p}:{n}" for p, n in sorted(by_pool.items())),
                           burn_usd_per_hour=round(sum(m.price_hourly_usd for m in unmanaged), 2),
                           unpriced=unpriced,
                           reason="tagged for this fleet but their pool is not in the config (or is now on "
                                  "another provider): no pool scales them; their burn counts toward [budget] "
                                  "max_hourly_usd until they are destroyed (put the pool back with "
                                  "min = max = 0 to have fleet do it)"))
        self._unmanaged_ids = ids

    def _machine(self, pool: PoolConfig, inst: ProviderInstance, row: MachineRow | None, now: float) -> Machine:
        if row is not None:
            state = row.state if row.state in (MachineState.TERMINATING, MachineState.DRAINING,
                                               MachineState.FAILED) else _STATUS_TO_STATE[inst.status]
            return Machine(id=inst.id, pool=pool.name, state=state, size=inst.size, region=inst.region,
                           price_hourly_usd=row.price_hourly_usd, created_at=row.created_at, ready_at=row.ready_at,
                           draining_since=_draining_since(row))
        price = size_price(pool, self.providers[pool.provider], inst.size, inst.region) or inst.price_hourly_usd
        created = inst.created_at.timestamp() if inst.created_at else now
        return Machine(id=inst.id, pool=pool.name, state=_STATUS_TO_STATE[inst.status], size=inst.size,
                       region=inst.region, price_hourly_usd=price or 0.0, created_at=min(created, now))

    # ------------------------------------------------------------ 4 act

    def retry_destroys(self, obs: Observation, now: float, result: TickResult) -> None:
        """Machines we asked to destroy that the provider still lists: ask again."""
        rows = self.store.machines([MachineState.TERMINATING])
        by_provider: dict[str, list[MachineRow]] = {}
        for row in rows:
            listed = {i.id for i in obs.listings.get(row.provider, [])}
            waited = now - (row.terminating_at or now)
            # Destroys are asynchronous (a Droplet stays listed for a moment after its DELETE):
            # ask again only when the provider had time to act on the first request.
            if row.provider_id not in listed or row.provider in obs.blocked or waited < DESTROY_RETRY_AFTER_S:
                continue
            by_provider.setdefault(row.provider, []).append(row)
            pool = self._pool_cfg(row.pool)
            if pool is not None and waited > pool.destroy_timeout_s:
                result.notes.setdefault(row.pool, []).append(
                    f"{row.provider_id} still exists {waited:.0f}s after its destroy (destroy_timeout_s="
                    f"{pool.destroy_timeout_s:g}): still billed, retrying; check the provider console")
                self.metrics.provider_errors.labels(row.provider, "destroy_timeout").inc()
        for provider_name, retry in by_provider.items():
            self._destroy(provider_name, retry, now, result, "retry")

    def act(self, plan: Plan, obs: Observation, now: float, result: TickResult) -> None:
        blocked = set(obs.blocked)
        for pool_plan in plan.pools:
            if pool_plan.held or pool_plan.provider in blocked:
                continue
            pool = self.config.pool(pool_plan.pool)
            for action in pool_plan.actions:
                if isinstance(action, DestroyAction):
                    self._destroy_planned(pool, action, obs, now, result)
                elif isinstance(action, DrainAction | UndrainAction):
                    self._drain_planned(pool, action, now, result)
                elif isinstance(action, CreateAction):
                    if self._create(pool, action, now, result) == "auth":
                        blocked.add(pool.provider)
                        break

    def _pool_rows(self, pool: PoolConfig) -> dict[str, MachineRow]:
        """The pool's machines as the database has them now (the re-check before acting)."""
        return {r.provider_id: r for r in self.store.unfinished_machines()
                if r.provider == pool.provider and r.pool == pool.name}

    def _destroy_planned(self, pool: PoolConfig, action: DestroyAction, obs: Observation, now: float,
                         result: TickResult) -> None:
        # Re-check just before destroying: still ours, still in this pool, not already on its way out.
        rows = self._pool_rows(pool)
        victims = [rows[i] for i in action.machine_ids if i in rows and rows[i].state in (
            MachineState.BOOTING, MachineState.READY, MachineState.DRAINING,
            MachineState.FAILED)]
        skipped = set(action.machine_ids) - {v.provider_id for v in victims}
        if skipped:
            result.notes.setdefault(pool.name, []).append(
                f"not destroying {', '.join(sorted(skipped))}: changed since the plan")
        if pool.machine_work is not None:
            victims = self._still_idle(pool, victims, obs, now, result)
        if not victims:
            return
        token = f"{pool.name[:20]}-d{secrets.token_hex(5)}"
        action_id = self.store.begin_action(token=token, pool=pool.name, provider=pool.provider, kind="destroy",
                                            count=len(victims), now=now,
                                            machine_ids=[v.provider_id for v in victims])
        for victim in victims:
            self.store.move(victim, MachineState.TERMINATING, now, "scale down: chosen for removal")
        failed = self._destroy(pool.provider, [_terminating(v, now) for v in victims], now, result, "scale down")
        self.store.finish_action(action_id, "done" if not failed else "partial", now,
                                 f"destroy requested for {len(victims) - failed}/{len(victims)}",
                                 launched=len(victims) - failed)

    def _drain_planned(self, pool: PoolConfig, action: DrainAction | UndrainAction, now: float,
                       result: TickResult) -> None:
        """Busy machines leave the pool (DrainAction), or draining ones are taken back
        (UndrainAction): the state first (the intent, and for a drain its clock), then the
        provider's draining tag, which a load balancer or service discovery can honour."""
        draining = isinstance(action, DrainAction)
        before, after = ((MachineState.READY, MachineState.DRAINING) if draining
                         else (MachineState.DRAINING, MachineState.READY))
        rows = self._pool_rows(pool)
        moved = [rows[i] for i in action.machine_ids if i in rows and rows[i].state is before]
        skipped = set(action.machine_ids) - {r.provider_id for r in moved}
        if skipped:
            result.notes.setdefault(pool.name, []).append(
                f"not {'draining' if draining else 'taking back'} {', '.join(sorted(skipped))}: changed since "
                "the plan")
        for row in moved:
            self.store.move(row, after, now, "scale down: busy, draining" if draining
                            else "taken back while draining: demand returned")
        if moved:
            self._mark_draining(pool.provider, moved, result, draining)
            log.info(kv(event=action.action, pool=pool.name, machines=",".join(r.provider_id for r in moved)))

    def retry_drain_marks(self, obs: Observation, result: TickResult) -> None:
        """The draining tag as the database says: a draining machine listed without it (the tag
        call failed, or we crashed between the state change and the call) is tagged again, and a
        ready one listed with it (taken back) has it taken off again."""
        rows = {(r.provider, r.provider_id): r for r in self.store.unfinished_machines()
                if r.state in (MachineState.DRAINING, MachineState.READY)}
        for provider_name, listing in obs.listings.items():
            if provider_name in obs.blocked:
                continue
            wrong: dict[bool, list[MachineRow]] = {True: [], False: []}  # should be draining -> rows
            for inst in listing:
                row = rows.get((provider_name, inst.id))
                if row is not None and inst.draining != (row.state is MachineState.DRAINING):
                    wrong[row.state is MachineState.DRAINING].append(row)
            for draining, fix in wrong.items():
                if fix:
                    self._mark_draining(provider_name, fix, result, draining)

    def _mark_draining(self, provider_name: str, rows: list[MachineRow], result: TickResult,
                       draining: bool) -> None:
        provider = self.providers[provider_name]
        ids = [r.provider_id for r in rows]
        try:
            call = provider.mark_draining if draining else provider.unmark_draining
            failures = {f.id: f.error for f in call(ids)}
        except ProviderError as exc:
            self._provider_error(provider_name, exc)
            failures = {i: exc for i in ids}
        for row in rows:
            err = failures.get(row.provider_id)
            if err is None:
                continue
            result.notes.setdefault(row.pool, []).append(
                f"{'tagging' if draining else 'untagging'} {row.provider_id} draining failed, will retry: "
                f"{err.kind}: {err}")
            log.warning(kv(event="drain_mark_failed", pool=row.pool, machine=row.provider_id, error=err.kind))

    def _still_idle(self, pool: PoolConfig, victims: list[MachineRow], obs: Observation, now: float,
                    result: TickResult) -> list[MachineRow]:
        """Re-read the per-machine work just before destroying: a ready machine that took work
        since the plan (or can no longer be read) is kept.  Machines not ready carry no work."""
        if not any(v.state is MachineState.READY for v in victims):
            return victims
        reading = read_pool_machine_work(pool)
        key_of, matched = _work_keys(pool, obs.listings.get(pool.provider, []), reading)
        seen_at = dict(self._work_seen_at)
        keep, kept = [], []
        for v in victims:
            if v.state is MachineState.READY:
                work, kind = self._work_of(pool, v.provider_id, key_of(v.provider_id), reading, matched, now,
                                           seen_at)
                if work > 0:
                    kept.append(f"{v.provider_id} ({kind}{'' if math.isinf(work) else f' {work:g}'})")
                    continue
            keep.append(v)
        if kept:
            why = f": {reading.error}" if reading is not None and reading.error else ""
            result.notes.setdefault(pool.name, []).append(
                f"not destroying {', '.join(kept)}: not idle when re-checked just before the destroy{why}")
            log.info(kv(event="destroy_skipped_busy", pool=pool.name, machines=len(kept)))
        return keep

    def _destroy(self, provider_name: str, rows: list[MachineRow], now: float, result: TickResult,
                 why: str) -> int:
        provider = self.providers[provider_name]
        ids = [r.provider_id for r in rows]
        try:
            failures = {f.id: f.error for f in provider.destroy(ids)}
        except ProviderError as exc:
            self._provider_error(provider_name, exc)
            failures = {i: exc for i in ids}
        for row in rows:
            err = failures.get(row.provider_id)
            self.store.note_destroy_attempt(row, None if err is None else f"{err.kind}: {err}")
            if err is not None:
                msg = f"destroying {row.provider_id} ({why}) failed, will retry: {err.kind}: {err}"
                result.notes.setdefault(row.pool, []).append(msg)
                log.warning(kv(event="destroy_failed", pool=row.pool, machine=row.provider_id, error=err.kind))
        return len(failures)

    def _create(self, pool: PoolConfig, action: CreateAction, now: float, result: TickResult) -> str:
        provider = self.providers[pool.provider]
        streak, last_failure = self.store.create_failure_streak(pool.name)
        if streak:
            wait = min(CREATE_BACKOFF_MAX_S, self.config.fleet.tick_seconds * 2 ** (streak - 1))
            if now - last_failure < wait:
                result.notes.setdefault(pool.name, []).append(
                    f"not creating: the last {streak} create(s) failed (not for capacity); retrying in "
                    f"{wait - (now - last_failure):.0f}s")
                return "backoff"
        token = self.store.reopen_lost_create(pool.name, action.count, now - TOKEN_REUSE_S, now)
        resume = None
        if token is not None:
            action_id = self.store.action_id(token)
            resume = self.store.last_attempt(action_id)
        else:
            token = f"{pool.name[:20]}-{secrets.token_hex(5)}"
            action_id = self.store.begin_action(token=token, pool=pool.name, provider=pool.provider,
                                                kind="create", count=action.count, now=now, size=action.size,
                                                region=action.region)
        notes = result.notes.setdefault(pool.name, [])
        try:
            launched = provider.create(LaunchSpec(
                target=launch_target(self.config, pool), count=action.count, token=token, resume=resume,
                on_attempt=lambda candidate: self.store.note_attempt(action_id, candidate)))
        except ProviderError as exc:
            self._provider_error(pool.provider, exc)
            self.store.finish_action(action_id, ActionStatus.FAILED, self.clock(), f"{exc.kind}: {exc}",
                                     error_kind=exc.kind)
            notes.append(f"creating {action.count} machine(s) failed ({exc.kind}): {exc}")
            log.warning(kv(event="create_failed", pool=pool.name, count=action.count, error=exc.kind))
            return "auth" if isinstance(exc, AuthError) else "error"
        after = self.clock()
        for inst in launched.instances:
            price = size_price(pool, provider, inst.size, inst.region) or inst.price_hourly_usd or \
                action.price_hourly_usd
            self.store.add_machine(provider=pool.provider, provider_id=inst.id, pool=pool.name,
                                   state=_STATUS_TO_STATE[inst.status], size=inst.size, region=inst.region,
                                   price_hourly_usd=price, token=token, spot=inst.spot,
                                   created_at=min(inst.created_at.timestamp(), after) if inst.created_at else now,
                                   now=after, reason=f"created by action {token}")
        made = len(launched.instances)
        notes.extend(launched.notes)
        if made < action.count:
            notes.append(f"asked for {action.count}, the provider launched {made}")
        self.store.finish_action(action_id, "done" if made == action.count else "partial", after,
                                 "; ".join(launched.notes) or "ok", launched=made, size=launched.size,
                                 region=launched.region)
        log.info(kv(event="created", pool=pool.name, count=made, size=launched.size, region=launched.region,
                    token=token))
        return "ok"

    # ------------------------------------------------------------ 5 record

    def record(self, plan: Plan, result: TickResult, now: float) -> None:
        rows = []
        for p in plan.pools:
            notes = result.notes.get(p.pool, [])
            reasons = [{"code": r.code, "message": r.message} for r in p.reasons]
            reasons += [{"code": "provider", "message": n} for n in notes]
            rows.append({
                "at": to_dt(now), "pool": p.pool, "ready": p.ready, "booting": p.booting, "current": p.current,
                "recommendation": p.recommendation, "desired": p.desired, "held": p.held,
                "demand_sample": p.demand_sample, "signals": [signal_json(s) for s in p.signals],
                "reasons": reasons, "actions": [action_json(a) for a in p.actions],
            })
            log.info(kv(event="decision", pool=p.pool, ready=p.ready, booting=p.booting, current=p.current,
                        to=p.desired, held=p.held, reason="; ".join(str(r) for r in p.reasons) or "steady"))
        self.store.record_decisions(rows)
        if now - self._last_prune >= PRUNE_EVERY_S:
            keep_s = self.config.fleet.decisions_retention_days * 86400
            pruned = self.store.prune_decisions(now - max(keep_s, self._longest_lookback()))
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
        for row in self.store.unfinished_machines():
            until = now
            if row.state is MachineState.TERMINATING and row.terminating_at is not None and (
                    (row.provider, row.provider_id) not in listed
                    or now - row.terminating_at < DESTROY_RETRY_AFTER_S):
                until = row.terminating_at
            if until - row.accrued_until >= ACCRUE_EVERY_S:
                charges.append((row, until, None))
        self.store.accrue_many(charges)

    def release_lease(self) -> None:
        """Give the lease back on a clean stop, so the next process acts at once."""
        self.store.release_lease("controller", self.holder)

    def spend_month_to_date(self, now: float | None = None) -> dict[str, float]:
        spent = self.store.spend_since(month_start(self.clock() if now is None else now))
        return {pool: float(amount) for pool, amount in spent.items()}

    # ------------------------------------------------------------ helpers

    def _pool_cfg(self, name: str) -> PoolConfig | None:
        try:
            return self.config.pool(name)
        except KeyError:
            return None

    def _billing(self, provider_name: str):
        return self.providers[provider_name].billing

    def _provider_error(self, provider_name: str, exc: ProviderError) -> None:
        self.metrics.provider_errors.labels(provider_name, exc.kind).inc()
        log.warning(kv(event="provider_error", provider=provider_name, kind=exc.kind, error=str(exc)[:300]))

    def _export(self, plan: Plan, obs: Observation, result: TickResult) -> None:
        m = self.metrics
        m.burn.set(plan.burn_planned_usd_per_hour if not result.dry_run else plan.burn_now_usd_per_hour)
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
            counts = self._work_counts.get(p.pool)
            if counts is not None:
                for reading in ("busy", "idle", "unread", "silent"):
                    m.machine_work.labels(p.pool, reading).set(counts[reading])
        if not result.dry_run:
            for pool, amount in self.spend_month_to_date().items():
                m.spend_mtd.labels(pool).set(amount)


def _work_keys(pool: PoolConfig, listing: list[ProviderInstance], reading: MachineWorkReading | None,
               ) -> tuple[Callable[[str], str | None], bool]:
    """What a machine's per-machine series is keyed by (its `match` field, as the listing shows
    it; an unlisted machine has only its id), and whether the reading has a series (readable or
    not) for any listed machine of the pool."""
    assert pool.machine_work is not None
    match = pool.machine_work.match  # a ProviderInstance field: private_ip, public_ip, name or id
    keys = {inst.id: value for inst in listing if inst.pool == pool.name and (value := getattr(inst, match))}
    matched = reading is not None and reading.work is not None and any(
        k in reading.work or k in reading.unreadable for k in keys.values())
    return (lambda machine_id: keys.get(machine_id, machine_id if match == "id" else None)), matched


def _machine_from_row(r: MachineRow) -> Machine:
    return Machine(id=r.provider_id, pool=r.pool, state=r.state, size=r.size, region=r.region,
                   price_hourly_usd=r.price_hourly_usd, created_at=r.created_at, ready_at=r.ready_at,
                   draining_since=_draining_since(r))


def _draining_since(r: MachineRow) -> float | None:
    return r.state_changed_at if r.state is MachineState.DRAINING else None


def _terminating(row: MachineRow, now: float) -> MachineRow:
    return replace(row, state=MachineState.TERMINATING, terminating_at=now)


def signal_json(s: SignalReading) -> dict[str, Any]:
    return {"name": s.name, "kind": s.kind, "value": s.value, "source": s.source, "age_s": s.age_s,
            "error": s.error}


def action_json(a: CreateAction | DestroyAction | DrainAction | UndrainAction) -> dict[str, Any]:
    if isinstance(a, CreateAction):
        return {"action": "create", "count": a.count, "size": a.size, "region": a.region,
                "price_hourly_usd": a.price_hourly_usd}
    return {"action": a.action, "machines": list(a.machine_ids)}


def pool_plan_json(p: PoolPlan, notes: list[str] | None = None) -> dict[str, Any]:
    return {
        "pool": p.pool, "provider": p.provider, "ready": p.ready, "booting": p.booting, "draining": p.draining,
        "current": p.current,
        "recommendation": p.recommendation, "desired": p.desired, "held": p.held,
        "actions": [action_json(a) for a in p.actions],
        "reasons": [r.message for r in p.reasons] + list(notes or []),
        "signals": [signal_json(s) for s in p.signals],
    }


def plan_json(result: TickResult) -> dict[str, Any]:
    plan = result.plan
    return {
        "at": to_dt(plan.at).isoformat(),
        "dry_run": result.dry_run,
        "pools": [pool_plan_json(p, result.notes.get(p.pool)) for p in plan.pools],
        "burn_usd_per_hour": {"now": round(plan.burn_now_usd_per_hour, 6),
                              "planned": round(plan.burn_planned_usd_per_hour, 6)},
    }


__all__ = ["Controller", "TickResult", "plan_json"]
