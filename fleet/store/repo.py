"""The queries the tick needs.  Every write commits at once: the tick's crash
safety depends on intent being durable before the provider call."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from fleet.model import (
    FINAL_STATES,
    HAPPENED_STATUSES,
    LISTING_GRACE_S,
    ActionKind,
    ActionStatus,
    ErrorKind,
    History,
    MachineState,
    PoolHistory,
    PreviousTick,
    SignalReading,
)
from fleet.store import lease
from fleet.store import tables as t
from fleet.store.lease import Fence
from fleet.store.ledger import Ledger, month_start
from fleet.store.states import check_move
from fleet.store.timefmt import to_dt, to_ts
from fleet.store.timefmt import ts_of as _ts

_FINAL = [s.value for s in FINAL_STATES]




@dataclass(frozen=True)
class MachineRow:
    id: int
    provider: str
    provider_id: str
    pool: str
    state: MachineState
    size: str
    region: str
    price_hourly_usd: float
    token: str | None
    created_at: float
    ready_at: float | None
    terminating_at: float | None
    accrued_until: float
    destroy_attempts: int
    spot: bool = False
    state_changed_at: float | None = None

    @classmethod
    def of(cls, r: Any) -> MachineRow:
        return cls(id=r.id, provider=r.provider, provider_id=r.provider_id, pool=r.pool,
                   state=MachineState(r.state), size=r.size, region=r.region,
                   price_hourly_usd=float(r.price_hourly_usd), token=r.token,
                   created_at=_ts(r.created_at), ready_at=to_ts(r.ready_at),
                   terminating_at=to_ts(r.terminating_at), accrued_until=_ts(r.accrued_until),
                   destroy_attempts=r.destroy_attempts, spot=bool(r.spot),
                   state_changed_at=to_ts(r.state_changed_at))


@dataclass(frozen=True)
class ActionRow:
    id: int
    token: str
    pool: str
    provider: str
    kind: ActionKind
    count: int
    size: str | None
    region: str | None
    status: ActionStatus
    created_at: float
    error_kind: ErrorKind | None = None

    @classmethod
    def of(cls, r: Any) -> ActionRow:
        return cls(id=r.id, token=r.token, pool=r.pool, provider=r.provider, kind=ActionKind(r.kind),
                   count=r.count, size=r.size, region=r.region, status=ActionStatus(r.status),
                   created_at=_ts(r.created_at), error_kind=ErrorKind(r.error_kind) if r.error_kind else None)


class Store(Ledger):
    def __init__(self, engine: Engine):
        self.engine = engine
        # While set (the acting replica's tick), every write first renews the lease under its
        # epoch in the same transaction, or raises LeaseLost (fleet/store/lease.py).
        self.fence: Fence | None = None

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction, fenced while a fence is set."""
        with self.engine.begin() as conn:
            if self.fence is not None:
                lease.check(conn, self.fence)
            yield conn

    # ------------------------------------------------------------ machines

    def machines(self, states: Iterable[MachineState] | None = None) -> list[MachineRow]:
        query = select(t.machines)
        if states is not None:
            query = query.where(t.machines.c.state.in_([s.value for s in states]))
        with self.engine.connect() as conn:
            return [MachineRow.of(r) for r in conn.execute(query.order_by(t.machines.c.id))]

    def unfinished_machines(self, provider: str | None = None, pool: str | None = None) -> list[MachineRow]:
        """Every machine that may still exist at the provider (of one provider and pool, if given)."""
        query = select(t.machines).where(t.machines.c.state.notin_(_FINAL))
        if provider is not None:
            query = query.where(t.machines.c.provider == provider)
        if pool is not None:
            query = query.where(t.machines.c.pool == pool)
        with self.engine.connect() as conn:
            return [MachineRow.of(r) for r in conn.execute(query.order_by(t.machines.c.id))]

    def closed_machine(self, provider: str, provider_id: str) -> MachineRow | None:
        """The TERMINATED row of this machine, if it has one (a listing that missed it closed it)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.machines).where(and_(
                t.machines.c.provider == provider, t.machines.c.provider_id == provider_id,
                t.machines.c.state.in_(_FINAL)))).first()
            return None if row is None else MachineRow.of(row)

    def add_machine(self, *, provider: str, provider_id: str, pool: str, state: MachineState, size: str,
                    region: str, price_hourly_usd: float, token: str | None, spot: bool, created_at: float,
                    now: float, reason: str, accrued_from: float | None = None) -> int:
        """A machine's row; it is billed from `accrued_from` (on the billing clock, fleet/clock.py),
        else from `created_at`."""
        at = to_dt(now)
        with self._begin() as conn:
            inserted = conn.execute(insert(t.machines).values(
                provider=provider, provider_id=provider_id, pool=pool, state=state.value, size=size,
                region=region, price_hourly_usd=Decimal(str(price_hourly_usd)), token=token, spot=spot,
                created_at=to_dt(created_at), ready_at=at if state is MachineState.READY else None,
                # found on its way out: its destroy is retried from now (TERMINATING has a timeout)
                terminating_at=at if state is MachineState.TERMINATING else None,
                state_changed_at=at, accrued_until=to_dt(created_at if accrued_from is None else accrued_from),
                destroy_attempts=0,
            )).inserted_primary_key
            assert inserted is not None
            machine_id = int(inserted[0])
            conn.execute(insert(t.machine_events).values(machine_id=machine_id, at=at, from_state=None,
                                                         to_state=state.value, reason=reason))
        return machine_id

    def move(self, machine: MachineRow, to_state: MachineState, now: float, reason: str, **fields: Any) -> None:
        check_move(machine.state, to_state)
        at = to_dt(now)
        values: dict[str, Any] = {"state": to_state.value, "state_changed_at": at, **fields}
        if to_state is MachineState.READY:
            values.setdefault("ready_at", at)
        if to_state is MachineState.TERMINATING:
            values.setdefault("terminating_at", at)
        if to_state is MachineState.TERMINATED:
            values.setdefault("terminated_at", at)
        if machine.state is MachineState.TERMINATED:  # listed again: it was never gone
            values.setdefault("terminated_at", None)
            if to_state is not MachineState.TERMINATING:
                values.setdefault("terminating_at", None)
        with self._begin() as conn:
            changed = conn.execute(update(t.machines).where(and_(
                t.machines.c.id == machine.id, t.machines.c.state == machine.state.value)).values(**values))
            if changed.rowcount != 1:
                raise RuntimeError(f"machine {machine.provider_id} changed under us (expected {machine.state})")
            conn.execute(insert(t.machine_events).values(machine_id=machine.id, at=at,
                                                         from_state=machine.state.value,
                                                         to_state=to_state.value, reason=reason))

    def note_destroy_attempt(self, machine: MachineRow, error: str | None) -> None:
        with self._begin() as conn:
            conn.execute(update(t.machines).where(t.machines.c.id == machine.id).values(
                destroy_attempts=t.machines.c.destroy_attempts + 1, last_error=error))

    # ------------------------------------------------------------ actions (the intent log)

    def begin_action(self, *, token: str, pool: str, provider: str, kind: ActionKind, count: int, now: float,
                     size: str | None = None, region: str | None = None,
                     machine_ids: list[str] | None = None) -> int:
        """Commit the intent (PENDING) before the provider call; returns the action's id."""
        with self._begin() as conn:
            key = conn.execute(insert(t.actions).values(
                token=token, pool=pool, provider=provider, kind=ActionKind(kind).value, count=count, size=size,
                region=region, machine_ids=machine_ids, status=ActionStatus.PENDING.value, created_at=to_dt(now),
                launched=0, **({"lease_epoch": self.fence.epoch} if self.fence is not None else {}),
            )).inserted_primary_key
            assert key is not None
            return int(key[0])

    def finish_action(self, action_id: int, status: ActionStatus, now: float, outcome: str, launched: int = 0,
                      size: str | None = None, region: str | None = None,
                      error_kind: ErrorKind | None = None) -> None:
        """Record the outcome; a FAILED action says how in `error_kind`."""
        values: dict[str, Any] = {"status": ActionStatus(status).value, "finished_at": to_dt(now), "outcome": outcome,
                                  "launched": launched, "error_kind": error_kind.value if error_kind else None}
        if size is not None:
            values["size"] = size
        if region is not None:
            values["region"] = region
        with self._begin() as conn:
            conn.execute(update(t.actions).where(t.actions.c.id == action_id).values(**values))

    def pending_actions(self) -> list[ActionRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.actions).where(t.actions.c.status == ActionStatus.PENDING.value)
                                .order_by(t.actions.c.id))
            return [ActionRow.of(r) for r in rows]

    def unconfirmed_creates(self, since: float) -> list[ActionRow]:
        """Recent creates that launched nothing as far as we know (failed, lost): a machine carrying
        one of their tokens was made by a call whose answer never reached us."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.actions).where(and_(
                t.actions.c.kind == ActionKind.CREATE.value,
                t.actions.c.status.in_((ActionStatus.FAILED.value, ActionStatus.LOST.value)),
                t.actions.c.created_at >= to_dt(since))))
            return [ActionRow.of(r) for r in rows]

    def recently_vanished(self, since: float) -> list[MachineRow]:
        """Machines closed since `since` because the listing stopped showing them (never asked to
        be destroyed): they may still run."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.machines).where(and_(
                t.machines.c.state.in_(_FINAL), t.machines.c.terminating_at.is_(None),
                t.machines.c.terminated_at >= to_dt(since))))
            return [MachineRow.of(r) for r in rows]

    def in_flight_creates(self, now: float) -> list[ActionRow]:
        """Creates whose machines may exist unseen: pending ones (a crash, or another replica's
        call in progress), and, for a listing's grace, recent ones adopted short of their count
        or that failed in a way that may have launched (transient, unclassified)."""
        with self.engine.connect() as conn:
            recent = [ActionRow.of(r) for r in conn.execute(select(t.actions).where(and_(
                t.actions.c.kind == ActionKind.CREATE.value,
                t.actions.c.status.in_([ActionStatus.FAILED.value, ActionStatus.ADOPTED.value]),
                t.actions.c.created_at >= to_dt(now - LISTING_GRACE_S))))]
        # adopted: some of its machines were found, the rest may still be on their way; a lost
        # one is not here: it was closed once its grace had passed, or is retried under its token
        unknown = [a for a in recent if a.status is ActionStatus.ADOPTED
                   or a.error_kind in (ErrorKind.TRANSIENT, ErrorKind.PROVIDER)]
        return [a for a in self.pending_actions() if a.kind is ActionKind.CREATE] + unknown

    def mark_adopted(self, action_id: int, now: float, found: int) -> None:
        with self._begin() as conn:
            conn.execute(update(t.actions).where(t.actions.c.id == action_id).values(
                status=ActionStatus.ADOPTED.value, finished_at=to_dt(now), launched=found,
                outcome=f"adopted {found} machine(s) made by a call whose answer was lost"))

    def reopen_lost_create(self, pool: str, count: int, since: float, now: float) -> str | None:
        """Reopen a recent create whose outcome was never recorded (a crash) and whose machines
        never appeared, for the same count, and return its token.  Retrying under the same token
        is idempotent where the provider dedupes (EC2 ClientToken) and adoptable everywhere."""
        with self._begin() as conn:
            row = conn.execute(select(t.actions.c.id, t.actions.c.token).where(and_(
                t.actions.c.pool == pool, t.actions.c.kind == ActionKind.CREATE.value,
                t.actions.c.status == ActionStatus.LOST.value,
                t.actions.c.count == count, t.actions.c.created_at >= to_dt(since),
            )).order_by(t.actions.c.id.desc()).limit(1)).first()
            if row is None:
                return None
            conn.execute(update(t.actions).where(t.actions.c.id == row.id).values(
                status=ActionStatus.PENDING.value, finished_at=None,
                outcome=f"retried at {to_dt(now).isoformat()}",
                **({"lease_epoch": self.fence.epoch} if self.fence is not None else {})))
            return row.token

    def action_id(self, token: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(t.actions.c.id).where(t.actions.c.token == token)).scalar_one()

    def note_attempt(self, action_id: int, attempt: str) -> None:
        """The candidate a create is about to be sent to, committed before the call."""
        with self._begin() as conn:
            conn.execute(update(t.actions).where(t.actions.c.id == action_id).values(attempt=attempt))

    def last_attempt(self, action_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.actions.c.attempt).where(t.actions.c.id == action_id)).scalar_one()

    # ------------------------------------------------------------ decisions and history

    def record_decisions(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self._begin() as conn:
                conn.execute(insert(t.decisions), rows)

    def create_failure_streak(self, pool: str, limit: int = 8) -> tuple[int, float | None]:
        """How many of the pool's latest creates failed in a row with an error kind that backs off
        (`ErrorKind.backs_off`: not capacity, not a rate limit), and when the latest of them was."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.actions.c.status, t.actions.c.error_kind, t.actions.c.created_at)
                                .where(and_(t.actions.c.pool == pool, t.actions.c.kind == ActionKind.CREATE.value))
                                .order_by(t.actions.c.id.desc()).limit(limit)).all()
        streak = 0
        for row in rows:
            kind = ErrorKind(row.error_kind) if row.error_kind else ErrorKind.PROVIDER
            if row.status != ActionStatus.FAILED.value or not kind.backs_off:
                break
            streak += 1
        return streak, (_ts(rows[0].created_at) if streak else None)

    def prune_decisions(self, before: float) -> int:
        """Delete decision rows older than `before` (one row per pool per tick adds up)."""
        with self._begin() as conn:
            return conn.execute(delete(t.decisions).where(t.decisions.c.at < to_dt(before))).rowcount

    def history(self, pools: Mapping[str, float], now: float, previous: Collection[str] = ()) -> History:
        """Cooldown and stabilization inputs per pool; `pools` maps a pool to how far back to look.
        The pools in `previous` also get their last decision's readings (one JSON row each)."""
        out: dict[str, PoolHistory] = {}
        with self.engine.connect() as conn:
            for pool, lookback in pools.items():
                last: dict[str, float | None] = {}
                for kind in (ActionKind.CREATE, ActionKind.DESTROY):
                    # when the scale event happened: a create retried after a crash counts from
                    # the retry (finished_at), not from the intent that was lost
                    happened = func.coalesce(t.actions.c.finished_at, t.actions.c.created_at)
                    row = conn.execute(select(func.max(happened)).where(and_(
                        t.actions.c.pool == pool, t.actions.c.kind == kind.value,
                        t.actions.c.status.in_([s.value for s in HAPPENED_STATUSES]),
                    ))).scalar()
                    last[kind] = None if row is None else min(_ts(row), now)  # a future time is now
                since = to_dt(now - lookback)
                recs = conn.execute(select(t.decisions.c.at, t.decisions.c.recommendation,
                                           t.decisions.c.demand_sample, t.decisions.c.ready, t.decisions.c.id)
                                    .where(and_(t.decisions.c.pool == pool, t.decisions.c.at >= since,
                                                t.decisions.c.held.is_(False)))
                                    .order_by(t.decisions.c.at)).all()
                out[pool] = PoolHistory(
                    last_scale_up_at=last[ActionKind.CREATE], last_scale_down_at=last[ActionKind.DESTROY],
                    recommendations=tuple((min(_ts(r.at), now), r.recommendation) for r in recs),
                    demand=tuple((_ts(r.at), r.demand_sample) for r in recs if r.demand_sample is not None),
                    previous=self._previous_tick(conn, recs[-1]) if recs and pool in previous else None,
                )
        return History(pools=out)

    @staticmethod
    def _previous_tick(conn: Any, last: Any) -> PreviousTick:
        """The last recorded decision's readings (only its row's JSON is read)."""
        signals = conn.execute(select(t.decisions.c.signals).where(t.decisions.c.id == last.id)).scalar() or []
        readings = tuple(SignalReading(s["name"], s["kind"], s["value"], s["source"], s.get("age_s"), s.get("error"))
                         for s in signals)
        return PreviousTick(_ts(last.at), last.ready, readings)

    def recent_decisions(self, pool: str | None, limit: int) -> list[dict[str, Any]]:
        query = select(t.decisions).order_by(t.decisions.c.id.desc()).limit(limit)
        if pool is not None:
            query = query.where(t.decisions.c.pool == pool)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # ------------------------------------------------------------ clock steps

    # the times a wall clock that ran ahead may have stamped in the future (the ledger's
    # accrued_until is not among them: spend is charged on the billing clock, fleet/clock.py)
    _STAMPS = ((t.actions, ("created_at", "finished_at")), (t.decisions, ("at",)),
               (t.machines, ("created_at", "ready_at", "state_changed_at", "terminating_at")))

    def repair_future(self, now: float) -> int:
        """Times after `now` are times that never came (the clock ran ahead and came back):
        they become `now`, so a cooldown or window counted from them lasts its own length,
        not the size of the step.  Returns the number of rows changed."""
        at = to_dt(now)
        changed = 0
        with self._begin() as conn:
            for table, columns in self._STAMPS:
                for column in columns:
                    col = table.c[column]
                    changed += conn.execute(update(table).where(col > at).values({column: at})).rowcount
        return changed

    # ------------------------------------------------------------ the leader lease

    def try_lease(self, name: str, holder: str, ttl_s: float, now: float) -> int | None:
        """Take or renew the lease `name` for `holder` until now + ttl: its epoch (the fencing
        token), or None while another holder has it."""
        return lease.take(self.engine, name, holder, ttl_s, now)

    def release_lease(self, name: str, holder: str, now: float) -> None:
        """Give the lease back (a clean stop): the next holder takes it at once, at a higher epoch."""
        lease.give_back(self.engine, name, holder, now)

    def renew(self) -> None:
        """Renew the fenced lease now (LeaseLost when it was taken over): a heartbeat."""
        with self._begin():
            pass


__all__ = ["ActionRow", "MachineRow", "Store", "month_start", "to_dt", "to_ts"]
