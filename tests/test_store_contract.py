"""The store contract: every public method of `fleet.store.repo.Store`, run against SQLite and
the machine's PostgreSQL (the `database_url` fixture parametrizes both), on a schema built by
Alembic (`fleet.store.db.upgrade`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleet.model import ActionKind, ActionStatus, ErrorKind, MachineState, SignalReading
from fleet.store import tables as t
from fleet.store.db import make_engine, upgrade
from fleet.store.lease import Fence, LeaseLost
from fleet.store.repo import MachineRow, Store, month_start, to_dt, to_ts
from fleet.store.states import IllegalMove

HOUR = 3600.0
T0 = 472_222 * HOUR  # 2023-11-14 22:00:00 UTC, on an hour boundary
S = MachineState


@pytest.fixture
def store(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


def add(store: Store, provider_id: str = "m1", *, state: MachineState = S.BOOTING, pool: str = "p",
        price: float = 3.6, created_at: float = T0, now: float | None = None, token: str | None = "tok",
        spot: bool = False) -> MachineRow:
    machine_id = store.add_machine(provider="simulated", provider_id=provider_id, pool=pool, state=state,
                                   size="gpu-1", region="r1", price_hourly_usd=price, token=token, spot=spot,
                                   created_at=created_at, now=created_at if now is None else now,
                                   reason="created")
    return row(store, machine_id)


def row(store: Store, machine_id: int) -> MachineRow:
    (found,) = [m for m in store.machines() if m.id == machine_id]
    return found


def events(store: Store, machine_id: int) -> list[tuple[str | None, str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.machine_events).where(t.machine_events.c.machine_id == machine_id)
                            .order_by(t.machine_events.c.id))
        return [(r.from_state, r.to_state, r.reason) for r in rows]


def machine_column(store: Store, machine_id: int, column: str):
    with store.engine.connect() as conn:
        return conn.execute(select(t.machines.c[column]).where(t.machines.c.id == machine_id)).scalar_one()


# ---------------------------------------------------------------- machines and their moves


def test_a_machine_added_is_listed_with_its_fields_and_an_audit_row(store):
    m = add(store, state=S.READY, created_at=T0 + 0.25, now=T0 + 10.5, spot=True)
    assert (m.provider, m.provider_id, m.pool, m.state, m.size, m.region) == (
        "simulated", "m1", "p", S.READY, "gpu-1", "r1")
    assert (m.price_hourly_usd, m.token, m.spot, m.destroy_attempts) == (3.6, "tok", True, 0)
    assert m.created_at == T0 + 0.25  # times round-trip as UTC seconds, fractions kept
    assert m.accrued_until == T0 + 0.25  # charged from its creation
    assert m.ready_at == m.state_changed_at == T0 + 10.5  # added READY: ready now
    assert m.terminating_at is None
    assert events(store, m.id) == [(None, "ready", "created")]


def test_a_machine_added_terminating_is_retried_from_now(store):
    m = add(store, state=S.TERMINATING, now=T0 + 5)
    assert (m.terminating_at, m.ready_at) == (T0 + 5, None)


def test_one_row_per_provider_machine(store):
    add(store, "m1")
    with pytest.raises(IntegrityError):
        add(store, "m1")


def test_machines_filters_by_state_and_unfinished_leaves_out_the_terminated(store):
    booting = add(store, "a")
    ready = add(store, "b", state=S.READY)
    gone = add(store, "c", state=S.READY)
    store.move(gone, S.TERMINATED, T0 + 60, "listing: gone")
    assert [m.provider_id for m in store.machines()] == ["a", "b", "c"]  # in id order
    assert [m.provider_id for m in store.machines([S.READY])] == ["b"]
    assert [m.provider_id for m in store.machines([S.BOOTING, S.TERMINATED])] == ["a", "c"]
    assert [m.id for m in store.unfinished_machines()] == [booting.id, ready.id]


def test_unfinished_machines_of_one_provider_and_pool(store):
    a = add(store, "a")
    b = add(store, "b", pool="q")
    store.add_machine(provider="aws", provider_id="a", pool="p", state=S.READY, size="g", region="r",
                      price_hourly_usd=1.0, token=None, spot=False, created_at=T0, now=T0, reason="adopted")
    assert [m.id for m in store.unfinished_machines(provider="simulated")] == [a.id, b.id]
    assert [m.id for m in store.unfinished_machines(provider="simulated", pool="q")] == [b.id]
    assert [m.provider for m in store.unfinished_machines(pool="p")] == ["simulated", "aws"]


def test_a_legal_move_stamps_its_times_and_writes_an_audit_row(store):
    m = add(store)
    store.move(m, S.READY, T0 + 30, "listed ready")
    ready = row(store, m.id)
    assert (ready.state, ready.ready_at, ready.state_changed_at) == (S.READY, T0 + 30, T0 + 30)
    store.move(ready, S.TERMINATING, T0 + 90, "scale down")
    leaving = row(store, m.id)
    assert (leaving.state, leaving.terminating_at, leaving.ready_at) == (S.TERMINATING, T0 + 90, T0 + 30)
    store.move(leaving, S.TERMINATED, T0 + 120, "gone")
    assert row(store, m.id).state is S.TERMINATED
    assert machine_column(store, m.id, "terminated_at") is not None
    assert events(store, m.id) == [(None, "booting", "created"), ("booting", "ready", "listed ready"),
                                   ("ready", "terminating", "scale down"), ("terminating", "terminated", "gone")]


def test_a_move_sets_extra_fields(store):
    m = add(store)
    store.move(m, S.FAILED, T0 + 5, "boot failed", last_error="no GPU")
    assert machine_column(store, m.id, "last_error") == "no GPU"
    assert row(store, m.id).state is S.FAILED


@pytest.mark.parametrize(("start", "to"), [(S.TERMINATING, S.READY), (S.TERMINATING, S.BOOTING),
                                           (S.FAILED, S.READY), (S.BOOTING, S.BOOTING)])
def test_an_illegal_move_is_refused_and_writes_nothing(store, start, to):
    m = add(store, state=start)
    with pytest.raises(IllegalMove):
        store.move(m, to, T0 + 5, "nope")
    assert row(store, m.id).state is start
    assert len(events(store, m.id)) == 1


def test_a_move_from_a_stale_row_is_refused_and_writes_nothing(store):
    m = add(store)
    store.move(m, S.READY, T0 + 5, "ready")
    with pytest.raises(RuntimeError, match="changed under us"):
        store.move(m, S.TERMINATING, T0 + 6, "from the old row")  # m still says BOOTING
    assert row(store, m.id).state is S.READY
    assert [e[1] for e in events(store, m.id)] == ["booting", "ready"]


def test_a_machine_listed_again_after_it_was_closed_is_reopened(store):
    m = add(store, state=S.READY)
    store.move(m, S.TERMINATED, T0 + 60, "missing from the listing")
    closed = store.closed_machine("simulated", "m1")
    assert closed is not None and closed.id == m.id and closed.state is S.TERMINATED
    store.move(closed, S.READY, T0 + 90, "listed again")
    back = row(store, m.id)
    assert back.state is S.READY and back.terminating_at is None
    assert machine_column(store, m.id, "terminated_at") is None
    assert store.closed_machine("simulated", "m1") is None
    assert store.closed_machine("simulated", "never-seen") is None


def test_a_closed_machine_listed_again_on_its_way_out_keeps_terminating_at(store):
    m = add(store, state=S.READY)
    store.move(m, S.TERMINATED, T0 + 60, "missing")
    store.move(row(store, m.id), S.TERMINATING, T0 + 90, "listed again, shutting down")
    back = row(store, m.id)
    assert (back.state, back.terminating_at) == (S.TERMINATING, T0 + 90)
    assert machine_column(store, m.id, "terminated_at") is None


def test_destroy_attempts_are_counted_with_the_last_error(store):
    m = add(store, state=S.TERMINATING)
    store.note_destroy_attempt(m, "HTTP 500")
    store.note_destroy_attempt(m, None)
    assert row(store, m.id).destroy_attempts == 2
    assert machine_column(store, m.id, "last_error") is None
    store.note_destroy_attempt(m, "timeout")
    assert machine_column(store, m.id, "last_error") == "timeout"


# ---------------------------------------------------------------- the intent log


def begin(store: Store, token: str, *, kind: ActionKind = ActionKind.CREATE, pool: str = "p", count: int = 2,
          now: float = T0, **kw) -> int:
    return store.begin_action(token=token, pool=pool, provider="simulated", kind=kind, count=count, now=now, **kw)


def actions(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return {r.token: r for r in conn.execute(select(t.actions))}


def test_an_intent_is_pending_until_finished(store):
    create = begin(store, "c1", size="gpu-1", region="r1")
    destroy = begin(store, "d1", kind=ActionKind.DESTROY, count=1, machine_ids=["m1"], now=T0 + 1)
    pending = store.pending_actions()
    assert [a.id for a in pending] == [create, destroy]
    first = pending[0]
    assert (first.token, first.pool, first.provider, first.kind, first.count) == ("c1", "p", "simulated",
                                                                                  ActionKind.CREATE, 2)
    assert (first.size, first.region, first.status, first.created_at, first.error_kind) == (
        "gpu-1", "r1", ActionStatus.PENDING, T0, None)
    assert actions(store)["d1"].machine_ids == ["m1"]
    assert store.action_id("c1") == create and store.action_id("d1") == destroy


def test_a_token_is_one_intent(store):
    begin(store, "c1")
    with pytest.raises(IntegrityError):
        begin(store, "c1")


def test_finishing_records_the_outcome_and_where_it_launched(store):
    action = begin(store, "c1", size="gpu-1", region="r1")
    store.finish_action(action, ActionStatus.PARTIAL, T0 + 5, "launched 1 of 2", launched=1,
                        size="gpu-2", region="r2")
    assert store.pending_actions() == []
    done = actions(store)["c1"]
    assert (done.status, done.launched, done.size, done.region, done.outcome, done.error_kind) == (
        "partial", 1, "gpu-2", "r2", "launched 1 of 2", None)
    assert done.finished_at is not None
    other = begin(store, "c2", size="gpu-1", region="r1")
    store.finish_action(other, ActionStatus.DONE, T0 + 6, "ok", launched=2)  # no size given: kept
    assert (actions(store)["c2"].size, actions(store)["c2"].region) == ("gpu-1", "r1")


def test_a_failed_action_keeps_its_error_kind(store):
    action = begin(store, "c1")
    store.finish_action(action, ActionStatus.FAILED, T0 + 5, "no capacity anywhere", error_kind=ErrorKind.CAPACITY)
    (failed,) = store.unconfirmed_creates(since=T0)
    assert (failed.status, failed.error_kind) == (ActionStatus.FAILED, ErrorKind.CAPACITY)


def test_unconfirmed_creates_are_recent_failed_or_lost_creates(store):
    old = begin(store, "old", now=T0 - 100)
    failed = begin(store, "failed", now=T0)
    lost = begin(store, "lost", now=T0 + 1)
    done = begin(store, "done", now=T0 + 2)
    destroy = begin(store, "destroy", kind=ActionKind.DESTROY, now=T0 + 3)
    begin(store, "pending", now=T0 + 4)
    for action, status in ((old, ActionStatus.FAILED), (failed, ActionStatus.FAILED), (lost, ActionStatus.LOST),
                           (done, ActionStatus.DONE), (destroy, ActionStatus.FAILED)):
        store.finish_action(action, status, T0 + 10, "x")
    assert sorted(a.token for a in store.unconfirmed_creates(since=T0)) == ["failed", "lost"]


def test_a_lost_create_found_by_its_token_is_adopted(store):
    action = begin(store, "c1")
    store.finish_action(action, ActionStatus.LOST, T0 + 5, "crashed before the answer")
    store.mark_adopted(action, T0 + 60, found=2)
    adopted = actions(store)["c1"]
    assert (adopted.status, adopted.launched) == ("adopted", 2)
    assert store.unconfirmed_creates(since=T0) == []


def test_a_lost_create_of_the_same_count_is_reopened_under_its_token(store):
    older = begin(store, "older", now=T0)
    newer = begin(store, "newer", now=T0 + 1)
    other_count = begin(store, "three", count=3, now=T0 + 2)
    other_pool = begin(store, "q", pool="q", now=T0 + 3)
    failed = begin(store, "failed", now=T0 + 4)
    for action in (older, newer, other_count, other_pool):
        store.finish_action(action, ActionStatus.LOST, T0 + 5, "lost")
    store.finish_action(failed, ActionStatus.FAILED, T0 + 5, "refused", error_kind=ErrorKind.INVALID)
    assert store.reopen_lost_create("p", 2, since=T0, now=T0 + 30) == "newer"  # the latest one
    reopened = actions(store)["newer"]
    assert (reopened.status, reopened.finished_at) == ("pending", None)
    assert store.reopen_lost_create("p", 2, since=T0, now=T0 + 31) == "older"
    assert store.reopen_lost_create("p", 2, since=T0, now=T0 + 32) is None  # none left, FAILED is no candidate
    assert store.reopen_lost_create("p", 3, since=T0 + 10, now=T0 + 33) is None  # too old
    assert [a.token for a in store.pending_actions()] == ["older", "newer"]


def test_the_candidate_a_create_was_sent_to_is_remembered(store):
    action = begin(store, "c1")
    assert store.last_attempt(action) is None
    store.note_attempt(action, "gpu-1@r1")
    store.note_attempt(action, "gpu-2@r2")
    assert store.last_attempt(action) == "gpu-2@r2"


# ---------------------------------------------------------------- the create back-off


def finished_create(store: Store, token: str, status: ActionStatus, error_kind: ErrorKind | None = None, *,
                    pool: str = "p", now: float = T0) -> None:
    action = begin(store, token, pool=pool, now=now)
    store.finish_action(action, status, now + 1, "x", error_kind=error_kind)


def test_the_failure_streak_counts_latest_failures_that_back_off(store):
    assert store.create_failure_streak("p") == (0, None)
    finished_create(store, "ok", ActionStatus.DONE, now=T0)
    finished_create(store, "f1", ActionStatus.FAILED, ErrorKind.QUOTA, now=T0 + 10)
    finished_create(store, "f2", ActionStatus.FAILED, ErrorKind.AUTH, now=T0 + 20)
    finished_create(store, "f3", ActionStatus.FAILED, ErrorKind.TRANSIENT, now=T0 + 30)
    destroy = begin(store, "d", kind=ActionKind.DESTROY, now=T0 + 40)
    store.finish_action(destroy, ActionStatus.FAILED, T0 + 41, "x", error_kind=ErrorKind.TRANSIENT)
    finished_create(store, "elsewhere", ActionStatus.FAILED, ErrorKind.QUOTA, pool="q", now=T0 + 50)
    assert store.create_failure_streak("p") == (3, T0 + 30)  # stops at the DONE; destroys, pool q not counted
    assert store.create_failure_streak("p", limit=2) == (2, T0 + 30)


@pytest.mark.parametrize("kind", [ErrorKind.CAPACITY, ErrorKind.RATE_LIMITED])
def test_capacity_and_rate_limits_end_the_streak(store, kind):
    finished_create(store, "f1", ActionStatus.FAILED, ErrorKind.PROVIDER, now=T0)
    finished_create(store, "f2", ActionStatus.FAILED, kind, now=T0 + 10)
    assert store.create_failure_streak("p") == (0, None)
    finished_create(store, "f3", ActionStatus.FAILED, ErrorKind.INVALID, now=T0 + 20)
    assert store.create_failure_streak("p") == (1, T0 + 20)


def test_a_failure_without_an_error_kind_backs_off_as_a_provider_error(store):
    finished_create(store, "f1", ActionStatus.FAILED, None, now=T0)
    assert store.create_failure_streak("p") == (1, T0)


# ---------------------------------------------------------------- decisions and history


def decision(at: float, pool: str = "p", recommendation: int = 2, *, held: bool = False,
             demand: float | None = None, ready: int = 1, signals: list | None = None) -> dict:
    return {"at": to_dt(at), "pool": pool, "ready": ready, "booting": 0, "current": ready,
            "recommendation": recommendation, "desired": recommendation, "held": held, "demand_sample": demand,
            "signals": signals or [], "reasons": [{"code": "x", "message": "y"}], "actions": []}


def test_decisions_are_recorded_and_read_back_newest_first(store):
    store.record_decisions([])  # nothing to write is no error
    store.record_decisions([decision(T0, recommendation=1), decision(T0 + 10, "q", 5),
                            decision(T0 + 20, recommendation=3)])
    assert [d["recommendation"] for d in store.recent_decisions(None, 10)] == [3, 5, 1]
    assert [d["recommendation"] for d in store.recent_decisions("p", 10)] == [3, 1]
    (latest,) = store.recent_decisions("p", 1)
    assert latest["reasons"] == [{"code": "x", "message": "y"}] and latest["held"] is False


def test_pruning_deletes_decisions_older_than_the_cut(store):
    store.record_decisions([decision(T0), decision(T0 + 10), decision(T0 + 20)])
    assert store.prune_decisions(before=T0 + 10) == 1
    assert store.prune_decisions(before=T0 + 10) == 0
    assert len(store.recent_decisions(None, 10)) == 2


def test_history_gives_the_last_scale_events_that_happened(store):
    up = begin(store, "up", now=T0)
    store.finish_action(up, ActionStatus.DONE, T0 + 50, "ok", launched=2)  # counts from when it finished
    late = begin(store, "failed", now=T0 + 100)
    store.finish_action(late, ActionStatus.FAILED, T0 + 101, "x", error_kind=ErrorKind.QUOTA)  # did not happen
    begin(store, "down", kind=ActionKind.DESTROY, now=T0 + 200)  # PENDING: sent, counts from its intent
    history = store.history({"p": 600.0, "nothing": 600.0}, now=T0 + 300)
    assert (history.of("p").last_scale_up_at, history.of("p").last_scale_down_at) == (T0 + 50, T0 + 200)
    assert history.of("nothing").last_scale_up_at is None and history.of("nothing").recommendations == ()
    assert history.of("not asked").previous is None


def test_history_reads_recent_unheld_recommendations_demand_and_the_previous_tick(store):
    reading = {"name": "q", "kind": "queue_depth", "value": 7.0, "source": "static", "age_s": 0.0, "error": None}
    store.record_decisions([
        decision(T0 - 1000, recommendation=9),  # outside the lookback
        decision(T0, recommendation=1, demand=1.5),
        decision(T0 + 10, recommendation=4, held=True),  # a held decision is no evidence
        decision(T0 + 20, recommendation=2, ready=3, signals=[reading]),
        decision(T0 + 30, "q", 8),
    ])
    history = store.history({"p": 100.0, "q": 100.0}, now=T0 + 60, previous=["p"])
    p = history.of("p")
    assert p.recommendations == ((T0, 1), (T0 + 20, 2))
    assert p.demand == ((T0, 1.5),)
    assert p.previous is not None
    assert (p.previous.at, p.previous.ready) == (T0 + 20, 3)
    assert p.previous.readings == (SignalReading("q", "queue_depth", 7.0, "static", 0.0, None),)
    assert history.of("q").previous is None  # not asked for


# ---------------------------------------------------------------- the lease and its fence


def test_the_lease_is_taken_renewed_refused_and_given_back_with_its_epoch(store):
    assert store.try_lease("fleet", "a", ttl_s=30, now=T0) == 1  # taken: the first epoch
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 10) is None  # refused while a holds it
    assert store.try_lease("fleet", "a", ttl_s=30, now=T0 + 20) == 1  # renewed (until T0 + 50): same epoch
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 40) is None
    assert store.try_lease("other", "b", ttl_s=30, now=T0 + 40) == 1  # leases are by name
    store.release_lease("fleet", "b", now=T0 + 41)  # not b's: no effect
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 45) is None
    store.release_lease("fleet", "a", now=T0 + 46)
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 46) == 2  # given back: taken at once, a new epoch
    assert store.try_lease("fleet", "a", ttl_s=30, now=T0 + 47) is None


def test_an_expired_lease_is_taken_over_at_a_higher_epoch(store):
    assert store.try_lease("fleet", "a", ttl_s=30, now=T0) == 1
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 31) == 2  # a's expired at T0 + 30
    assert store.try_lease("fleet", "a", ttl_s=30, now=T0 + 32) is None
    assert store.try_lease("fleet", "b", ttl_s=30, now=T0 + 70) == 3  # b's own expired lease: a takeover too


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fenced(store: Store, holder: str, clock: Clock, ttl_s: float = 30) -> int:
    epoch = store.try_lease("controller", holder, ttl_s, clock())
    assert epoch is not None
    store.fence = Fence("controller", holder, epoch, ttl_s, clock)
    return epoch


def test_fenced_writes_renew_the_lease_and_stamp_its_epoch(store):
    clock = Clock(T0)
    epoch = fenced(store, "a", clock)
    clock.now = T0 + 25
    action = begin(store, "c1", now=clock())  # renews the lease to T0 + 55
    assert actions(store)["c1"].lease_epoch == epoch
    clock.now = T0 + 50
    store.renew()  # a heartbeat: until T0 + 80
    assert store.try_lease("controller", "b", 30, T0 + 79) is None
    store.finish_action(action, ActionStatus.DONE, clock(), "ok", launched=2)
    assert actions(store)["c1"].status == "done"


def test_a_replica_whose_lease_was_taken_over_cannot_write(store):
    clock = Clock(T0)
    fenced(store, "a", clock)
    m = add(store)
    action = begin(store, "c1")
    assert store.try_lease("controller", "b", 30, T0 + 31) == 2  # a stalled past its lease; b took it
    clock.now = T0 + 32
    for write in (lambda: begin(store, "c2"), lambda: store.move(m, S.READY, T0 + 32, "ready"),
                  lambda: store.finish_action(action, ActionStatus.DONE, T0 + 32, "ok"),
                  lambda: store.accrue(m, T0 + 32), lambda: store.record_decisions([decision(T0 + 32)]),
                  store.renew):
        with pytest.raises(LeaseLost):
            write()
    assert set(actions(store)) == {"c1"} and actions(store)["c1"].status == "pending"
    assert row(store, m.id).state is S.BOOTING and store.spend_since(T0) == {}
    assert store.recent_decisions(None, 10) == []


def test_a_fenced_write_after_the_lease_ran_out_is_refused_even_if_nobody_took_it(store):
    clock = Clock(T0)
    fenced(store, "a", clock, ttl_s=30)
    clock.now = T0 + 31
    with pytest.raises(LeaseLost):
        begin(store, "late")
    store.fence = None  # unfenced (a dry run, the CLI): writes as before
    begin(store, "unfenced")
    assert actions(store)["unfenced"].lease_epoch is None


# ---------------------------------------------------------------- clock steps


def test_times_stamped_in_the_future_are_repaired_to_now(store):
    m = add(store, created_at=T0 + 500, now=T0 + 500)  # a clock that ran ahead
    store.move(m, S.READY, T0 + 500, "ready")
    action = begin(store, "c1", now=T0 + 500)
    store.finish_action(action, ActionStatus.DONE, T0 + 500, "ok")
    store.record_decisions([decision(T0 + 500), decision(T0 - 10)])
    changed = store.repair_future(now=T0 + 100)
    assert changed == 6  # machines: created_at, ready_at, state_changed_at; the action: 2; one decision
    fixed = row(store, m.id)
    assert (fixed.created_at, fixed.ready_at, fixed.state_changed_at) == (T0 + 100,) * 3
    assert fixed.accrued_until == T0 + 500  # the ledger's own clock is not repaired here
    assert sorted(d["at"].replace(tzinfo=None) for d in store.recent_decisions(None, 10)) == sorted(
        x.replace(tzinfo=None) for x in (to_dt(T0 - 10), to_dt(T0 + 100)))
    assert store.repair_future(now=T0 + 100) == 0


def test_history_reads_a_future_time_as_now(store):
    up = begin(store, "up", now=T0 + 500)
    store.finish_action(up, ActionStatus.DONE, T0 + 500, "ok")
    store.record_decisions([decision(T0 + 500, recommendation=4)])
    p = store.history({"p": 600.0}, now=T0 + 100).of("p")
    assert p.last_scale_up_at == T0 + 100
    assert p.recommendations == ((T0 + 100, 4),)


# ---------------------------------------------------------------- the ledger


def ledger(store: Store) -> list[tuple[float | None, float, Decimal]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.spend_ledger).order_by(t.spend_ledger.c.machine_id, t.spend_ledger.c.hour_start))
        return [(to_ts(r.hour_start), r.seconds, Decimal(str(r.amount_usd))) for r in rows]


def test_accrual_charges_from_where_it_stopped_in_hourly_rows(store):
    m = add(store, price=3.6, created_at=T0 + 1800)  # $0.001 a second
    store.accrue(m, T0 + 2800)
    assert ledger(store) == [(T0, 1000.0, Decimal("1.000000"))]
    m = row(store, m.id)
    assert m.accrued_until == T0 + 2800
    store.accrue(m, T0 + 4600)  # across the hour: 800 s in the first, 1000 s in the next
    assert ledger(store) == [(T0, 1800.0, Decimal("1.800000")), (T0 + HOUR, 1000.0, Decimal("1.000000"))]
    assert store.spend_since(T0) == {"p": Decimal("2.800000")}
    assert store.spend_since(T0 + HOUR) == {"p": Decimal("1.000000")}


def test_accruing_again_up_to_the_same_time_or_earlier_charges_nothing(store):
    m = add(store, price=3.6)
    store.accrue(m, T0 + 100)
    m = row(store, m.id)
    store.accrue(m, T0 + 100)
    store.accrue(m, T0 + 50)  # a clock step back bills nothing and does not move accrued_until back
    assert store.spend_since(T0) == {"p": Decimal("0.100000")}
    assert row(store, m.id).accrued_until == T0 + 100


def test_a_machine_gone_before_the_minimum_is_charged_the_minimum(store):
    m = add(store, price=3.6)
    store.accrue(m, T0 + 20, min_seconds=60)
    assert store.spend_since(T0) == {"p": Decimal("0.060000")}
    assert row(store, m.id).accrued_until == T0 + 60


def test_many_machines_are_charged_in_one_call(store):
    a = add(store, "a", price=3.6)
    b = add(store, "b", pool="q", price=7.2, created_at=T0 + HOUR - 10)
    store.accrue_many([(a, T0 + 10, None), (b, T0 + HOUR + 10, None)])
    assert store.spend_since(T0) == {"p": Decimal("0.010000"), "q": Decimal("0.040000")}
    assert [r[:2] for r in ledger(store)] == [(T0, 10.0), (T0, 10.0), (T0 + HOUR, 10.0)]


def test_spend_since_is_empty_without_charges_and_month_start_is_the_first_at_midnight(store):
    assert store.spend_since(T0) == {}
    assert month_start(T0) == to_dt(T0).replace(day=1, hour=0, minute=0, second=0).timestamp()
