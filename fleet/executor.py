"""The executor: apply a Plan through the providers (create, destroy, drain, and the retries
of destroys and drain tags that did not take).

Intent before action: an `actions` row is committed before every provider call and its
outcome after, so a crash between the two is repaired by the next tick's reconcile.  What a
call could not do is returned as the pool's notes, each a `Reason` with a code.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fleet.cloud import launch_target
from fleet.config import Config, PoolConfig
from fleet.instances import created_at, pool_config, price_of, state_of
from fleet.model import (
    DESTROY_RETRY_AFTER_S,
    DESTROYABLE_STATES,
    ActionKind,
    ActionStatus,
    CreateAction,
    CreateOutcome,
    DestroyAction,
    DrainAction,
    MachineState,
    Plan,
    Reason,
    UndrainAction,
)
from fleet.observe import Observation, SignalReader
from fleet.reconcile import TOKEN_REUSE_S
from fleet.store.repo import MachineRow, Store
from fleet.telemetry import Telemetry, kv
from fleet.work import WorkTracker
from providers.base import AuthError, DestroyFailure, LaunchResult, LaunchSpec, Provider, ProviderError

log = logging.getLogger("fleet")

# Creates that keep failing for a reason other than capacity (a bad image, a bad subnet) are
# retried after tick_seconds x 2^(failures-1), at most this long, not every tick.
CREATE_BACKOFF_MAX_S = 900.0


@dataclass
class Notes:
    """What acting said, per pool (recorded with the decision, shown by `fleet plan`)."""

    by_pool: dict[str, list[Reason]] = field(default_factory=dict)

    def add(self, pool: str, code: str, message: str) -> None:
        self.by_pool.setdefault(pool, []).append(Reason(code, message))

    def frozen(self) -> dict[str, tuple[Reason, ...]]:
        return {pool: tuple(reasons) for pool, reasons in self.by_pool.items()}


def mint_token(pool: str, kind: ActionKind) -> str:
    """An action's idempotency token (EC2 ClientToken, the Droplet name prefix): short, unique."""
    return f"{pool[:20]}-{'d' if kind is ActionKind.DESTROY else ''}{secrets.token_hex(5)}"


def _failures(call: Callable[[list[str]], list[DestroyFailure]], ids: list[str],
              on_error: Callable[[ProviderError], None]) -> dict[str, ProviderError]:
    """A batch provider call's failures by id; a call that fails whole fails every id."""
    try:
        return {f.id: f.error for f in call(ids)}
    except ProviderError as exc:
        on_error(exc)
        return {i: exc for i in ids}


class Executor:
    def __init__(self, config: Config, store: Store, providers: Mapping[str, Provider], signals: SignalReader,
                 work: WorkTracker, telemetry: Telemetry, clock: Callable[[], float],
                 billing: Callable[[], float] | None = None):
        """`billing`: the clock spend is charged on (fleet/clock.py); the wall clock by default."""
        self.config = config
        self.store = store
        self.providers = providers
        self.signals = signals
        self.work = work
        self.telemetry = telemetry
        self.clock = clock
        self.billing = billing or clock

    # ------------------------------------------------------------ the plan

    def act(self, plan: Plan, obs: Observation, now: float, notes: Notes) -> None:
        blocked = set(obs.blocked)
        for pool_plan in plan.pools:
            if pool_plan.held or pool_plan.provider in blocked:
                continue
            pool = self.config.pool(pool_plan.pool)
            for action in pool_plan.actions:
                if isinstance(action, DestroyAction):
                    self._destroy_planned(pool, action, obs, now, notes)
                elif isinstance(action, DrainAction | UndrainAction):
                    self._drain_planned(pool, action, now, notes)
                elif self.create(pool, action, now, notes) is CreateOutcome.AUTH:
                    blocked.add(pool.provider)
                    break

    def _changed_since_plan(self, pool: PoolConfig, wanted: Sequence[str], rows: list[MachineRow],
                            doing: str, notes: Notes) -> None:
        skipped = set(wanted) - {r.provider_id for r in rows}
        if skipped:
            notes.add(pool.name, "changed_since_plan", f"not {doing} {', '.join(sorted(skipped))}: changed "
                                                       "since the plan")

    def _destroy_planned(self, pool: PoolConfig, action: DestroyAction, obs: Observation, now: float,
                         notes: Notes) -> None:
        # re-check just before destroying: still ours, still in this pool, not already on its way out
        rows = {r.provider_id: r for r in self.store.unfinished_machines(pool.provider, pool.name)}
        victims = [rows[i] for i in action.machine_ids if i in rows and rows[i].state in DESTROYABLE_STATES]
        self._changed_since_plan(pool, action.machine_ids, victims, "destroying", notes)
        if pool.machine_work is not None and any(v.state is MachineState.READY for v in victims):
            victims = self._still_idle(pool, victims, obs, now, notes)
        if not victims:
            return
        action_id = self.store.begin_action(token=mint_token(pool.name, ActionKind.DESTROY), pool=pool.name,
                                            provider=pool.provider, kind=ActionKind.DESTROY, count=len(victims),
                                            now=now, machine_ids=[v.provider_id for v in victims])
        for victim in victims:
            self.store.move(victim, MachineState.TERMINATING, now, "scale down: chosen for removal")
        terminating = [replace(v, state=MachineState.TERMINATING, terminating_at=now) for v in victims]
        failed = self.destroy(pool.provider, terminating, notes, "scale down")
        self.store.finish_action(action_id, ActionStatus.DONE if not failed else ActionStatus.PARTIAL, now,
                                 f"destroy requested for {len(victims) - failed}/{len(victims)}",
                                 launched=len(victims) - failed)

    def _still_idle(self, pool: PoolConfig, victims: list[MachineRow], obs: Observation, now: float,
                    notes: Notes) -> list[MachineRow]:
        """Re-read the per-machine work just before destroying: a ready machine that took work
        since the plan (or can no longer be read) is kept."""
        reading = self.signals.read_pool_machine_work(pool)
        keep, kept = self.work.recheck(pool, victims, obs.listings.get(pool.provider, []), reading, now)
        if kept:
            why = f": {reading.error}" if reading is not None and reading.error else ""
            notes.add(pool.name, "busy_at_recheck", f"not destroying {', '.join(kept)}: not idle when re-checked "
                                                    f"just before the destroy{why}")
            log.info(kv(event="destroy_skipped_busy", pool=pool.name, machines=len(kept)))
        return keep

    def destroy(self, provider_name: str, rows: list[MachineRow], notes: Notes, why: str) -> int:
        """Ask the provider to destroy `rows` (already TERMINATING); returns how many failed."""
        provider = self.providers[provider_name]
        failures = _failures(provider.destroy, [r.provider_id for r in rows],
                             lambda exc: self.telemetry.provider_error(provider_name, exc))
        for row in rows:
            err = failures.get(row.provider_id)
            self.store.note_destroy_attempt(row, None if err is None else f"{err.kind}: {err}")
            if err is not None:
                notes.add(row.pool, "destroy_failed", f"destroying {row.provider_id} ({why}) failed, will retry: "
                                                      f"{err.kind}: {err}")
                log.warning(kv(event="destroy_failed", pool=row.pool, machine=row.provider_id, error=err.kind))
        return len(failures)

    def _drain_planned(self, pool: PoolConfig, action: DrainAction | UndrainAction, now: float,
                       notes: Notes) -> None:
        """Busy machines leave the pool (DrainAction), or draining ones are taken back
        (UndrainAction): the state first (the intent, and for a drain its clock), then the
        provider's draining tag, which a load balancer or service discovery can honour."""
        draining = isinstance(action, DrainAction)
        before, after = ((MachineState.READY, MachineState.DRAINING) if draining
                         else (MachineState.DRAINING, MachineState.READY))
        rows = {r.provider_id: r for r in self.store.unfinished_machines(pool.provider, pool.name)}
        moved = [rows[i] for i in action.machine_ids if i in rows and rows[i].state is before]
        self._changed_since_plan(pool, action.machine_ids, moved, "draining" if draining else "taking back",
                                 notes)
        for row in moved:
            self.store.move(row, after, now, "scale down: busy, draining" if draining
                            else "taken back while draining: demand returned")
        if moved:
            self.mark_draining(pool.provider, moved, notes, draining)
            log.info(kv(event=action.action, pool=pool.name, machines=",".join(r.provider_id for r in moved)))

    def mark_draining(self, provider_name: str, rows: list[MachineRow], notes: Notes, draining: bool) -> None:
        provider = self.providers[provider_name]
        call = provider.mark_draining if draining else provider.unmark_draining
        failures = _failures(call, [r.provider_id for r in rows],
                             lambda exc: self.telemetry.provider_error(provider_name, exc))
        for row in rows:
            err = failures.get(row.provider_id)
            if err is not None:
                notes.add(row.pool, "drain_tag_failed", f"{'tagging' if draining else 'untagging'} "
                                                        f"{row.provider_id} draining failed, will retry: "
                                                        f"{err.kind}: {err}")
                log.warning(kv(event="drain_mark_failed", pool=row.pool, machine=row.provider_id, error=err.kind))

    # ------------------------------------------------------------ creates

    def create(self, pool: PoolConfig, action: CreateAction, now: float, notes: Notes) -> CreateOutcome:
        wait = self._backoff_left(pool, now)
        if wait is not None:
            notes.add(pool.name, "create_backoff", wait)
            return CreateOutcome.BACKOFF
        token, action_id, resume = self._intent(pool, action, now)
        try:
            launched = self.providers[pool.provider].create(LaunchSpec(
                target=launch_target(self.config, pool), count=action.count, token=token, resume=resume,
                on_attempt=lambda candidate: self.store.note_attempt(action_id, candidate)))
        except ProviderError as exc:
            self.telemetry.provider_error(pool.provider, exc)
            self.store.finish_action(action_id, ActionStatus.FAILED, self.clock(), f"{exc.kind}: {exc}",
                                     error_kind=exc.kind)
            notes.add(pool.name, "create_failed", f"creating {action.count} machine(s) failed ({exc.kind}): {exc}")
            log.warning(kv(event="create_failed", pool=pool.name, count=action.count, error=exc.kind))
            return CreateOutcome.AUTH if isinstance(exc, AuthError) else CreateOutcome.FAILED
        self._launched(pool, action, token, action_id, launched, now, notes)
        return CreateOutcome.OK

    def _backoff_left(self, pool: PoolConfig, now: float) -> str | None:
        """Why not to create this tick (earlier creates kept failing), or None."""
        streak, last_failure = self.store.create_failure_streak(pool.name)
        if not streak or last_failure is None:
            return None
        wait = min(CREATE_BACKOFF_MAX_S, self.config.fleet.tick_seconds * 2 ** (streak - 1))
        if now - last_failure >= wait:
            return None
        return (f"not creating: the last {streak} create(s) failed (not for capacity); retrying in "
                f"{wait - (now - last_failure):.0f}s")

    def _intent(self, pool: PoolConfig, action: CreateAction, now: float) -> tuple[str, int, str | None]:
        """The create's action row, committed before the call: (token, action id, resume): on a
        provider that dedupes creates, a recent lost create of the same count is reopened under
        its token, else a new one."""
        # the same token again only where the provider dedupes on it (EC2's ClientToken): elsewhere
        # the lost call's machines may still appear, and two calls would put twice the count on it
        idempotent = self.providers[pool.provider].capabilities.idempotent_create
        token = (self.store.reopen_lost_create(pool.name, action.count, now - TOKEN_REUSE_S, now)
                 if idempotent else None)
        if token is not None:
            action_id = self.store.action_id(token)
            return token, action_id, self.store.last_attempt(action_id)
        token = mint_token(pool.name, ActionKind.CREATE)
        action_id = self.store.begin_action(token=token, pool=pool.name, provider=pool.provider,
                                            kind=ActionKind.CREATE, count=action.count, now=now, size=action.size,
                                            region=action.region)
        return token, action_id, None

    def _launched(self, pool: PoolConfig, action: CreateAction, token: str, action_id: int,
                  launched: LaunchResult, now: float, notes: Notes) -> None:
        after = self.clock()
        provider = self.providers[pool.provider]
        for inst in launched.instances:
            self.store.add_machine(provider=pool.provider, provider_id=inst.id, pool=pool.name, state=state_of(inst),
                                   size=inst.size, region=inst.region,
                                   price_hourly_usd=price_of(pool, provider, inst, action.price_hourly_usd),
                                   token=token, spot=inst.spot,
                                   created_at=created_at(inst, after) if inst.created_at else now,
                                   now=after, reason=f"created by action {token}", accrued_from=self.billing())
        made = len(launched.instances)
        for note in launched.notes:
            notes.add(pool.name, "launch_note", note)
        if made < action.count:
            notes.add(pool.name, "create_partial", f"asked for {action.count}, the provider launched {made}")
        self.store.finish_action(action_id, ActionStatus.DONE if made == action.count else ActionStatus.PARTIAL,
                                 after, "; ".join(launched.notes) or "ok", launched=made, size=launched.size,
                                 region=launched.region)
        log.info(kv(event="created", pool=pool.name, count=made, size=launched.size, region=launched.region,
                    token=token))

    # ------------------------------------------------------------ retries

    def retry_destroys(self, obs: Observation, now: float, notes: Notes) -> None:
        """Machines we asked to destroy that the provider still lists: ask again."""
        by_provider: dict[str, list[MachineRow]] = {}
        for row in self.store.machines([MachineState.TERMINATING]):
            waited = now - (row.terminating_at or now)
            # destroys are asynchronous (a Droplet stays listed for a moment after its DELETE):
            # ask again only when the provider had time to act on the first request; one never
            # asked (a crash between marking it and the call) is asked at once: it runs, billed,
            # outside the pool's capacity
            asked = row.destroy_attempts > 0
            if (row.provider_id not in obs.listed_ids(row.provider) or row.provider in obs.blocked
                    or (asked and waited < DESTROY_RETRY_AFTER_S)):
                continue
            by_provider.setdefault(row.provider, []).append(row)
            pool = pool_config(self.config, row.pool)
            if pool is not None and waited > pool.destroy_timeout_s:
                notes.add(row.pool, "destroy_timeout", f"{row.provider_id} still exists {waited:.0f}s after its "
                                                       f"destroy (destroy_timeout_s={pool.destroy_timeout_s:g}): "
                                                       "still billed, retrying; check the provider console")
                self.telemetry.destroy_timeout(row.provider)
        for provider_name, retry in by_provider.items():
            self.destroy(provider_name, retry, notes, "retry")

    def retry_drain_marks(self, obs: Observation, notes: Notes) -> None:
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
                    self.mark_draining(provider_name, fix, notes, draining)
