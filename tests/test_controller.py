"""The tick end to end on a virtual clock: the embedded cloud, a real database
(SQLite and PostgreSQL), crash injection at every step of a scale-up and a scale-down."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from fleet.model import MachineState
from fleet.store import tables as t
from fleet.store.db import ensure_schema, make_engine
from fleet.store.repo import Store
from providers.base import DestroyFailure, InstanceStatus, TransientError
from tests.tick_helpers import Crash, CrashingCloud, make_rig


def live_db_ids(store: Store) -> set[str]:
    return {m.provider_id for m in store.unfinished_machines()}


def table_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(tab)).scalar()
                for name, tab in t.metadata.tables.items()}


def test_example_scales_up_then_down_after_cooldown_and_stabilization(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, max_hourly_usd=100.0, budget=100.0)
    ctl = rig.controller()
    rig.set(queue=12)
    plan = ctl.tick().plan.pool("imagegen")
    assert plan.desired == 3 and len(rig.cloud_ids()) == 3

    rig.set(queue=100)  # wants 25: the step limit allows +max(4, 100% of 3) = +4 a tick, max is 10
    rig.clock.advance(15)
    assert ctl.tick().plan.pool("imagegen").desired == 3  # scale-up cooldown (30 s)
    rig.clock.advance(16)
    plan = ctl.tick().plan.pool("imagegen")
    assert plan.desired == 7 and any(r.code == "step_limit" for r in plan.reasons)
    rig.clock.advance(31)
    assert ctl.tick().plan.pool("imagegen").desired == 10  # max
    last_up = rig.clock.now

    rig.set(queue=0)
    down_at = None
    for _ in range(60):
        rig.clock.advance(15)
        plan = ctl.tick().plan.pool("imagegen")
        if plan.desired < 10:
            down_at = rig.clock.now
            break
    assert down_at is not None
    # not before the cooldown since the last scale-up, nor before the high recommendations leave the window
    assert down_at - last_up >= 300
    assert plan.desired == 0  # straight to min
    assert len(rig.cloud_ids()) == 0
    rig.clock.advance(15)
    ctl.tick()
    assert live_db_ids(ctl.store) == set()


def test_example_config_budget_cap_clamps_and_names_the_cap(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)  # pool max_hourly_usd = 20: five H100s at $3.39
    ctl = rig.controller()
    rig.set(queue=40)
    ctl.tick()
    rig.clock.advance(31)
    plan = ctl.tick().plan.pool("imagegen")
    assert plan.desired == 5
    assert any(r.code == "budget" and "max_hourly_usd=20" in r.message for r in plan.reasons)
    assert sum(m.price_hourly_usd for m in rig.cloud.all_machines()) <= 20.0


def test_plan_changes_nothing(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    ctl = rig.controller()
    rig.set(queue=12)
    ctl.tick()
    rig.clock.advance(200)
    rig.set(queue=40)
    before = table_counts(ctl.store)
    cloud_before = rig.cloud_ids()
    calls_before = len(rig.cloud.calls)
    result = rig.controller().tick(dry_run=True)
    assert result.plan.pool("imagegen").actions  # it would act...
    assert table_counts(ctl.store) == before  # ...but wrote nothing
    assert rig.cloud_ids() == cloud_before
    assert set(rig.cloud.calls[calls_before:]) <= {"list"}


def test_missing_or_corrupt_signal_holds_the_pool(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0)
    ctl = rig.controller()
    rig.set(queue=12)
    ctl.tick()
    rig.signals.write_text("{not json")
    rig.clock.advance(60)
    plan = ctl.tick().plan.pool("imagegen")
    assert plan.desired == 3 and not plan.actions
    assert any("not valid JSON" in r.message for r in plan.reasons)
    rig.signals.unlink()
    rig.clock.advance(60)
    assert ctl.tick().plan.pool("imagegen").desired == 3
    assert len(rig.cloud_ids()) == 3


def test_foreign_tagged_machine_is_adopted_and_vanished_one_closed(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    orphan = rig.cloud.add_foreign_machine("demo", "imagegen")  # ours by tag, unknown to the database
    other = rig.cloud.add_foreign_machine("other-fleet", "imagegen")
    (mine,) = rig.cloud_ids() - {orphan, other}
    rig.cloud.destroy([mine])  # deleted behind our back
    rig.clock.advance(120)
    ctl.tick()
    assert mine in live_db_ids(ctl.store)  # one listing without it is no proof: listings lag
    rig.clock.advance(60)
    ctl.tick()
    ids = live_db_ids(ctl.store)
    assert orphan in ids and other not in ids and mine not in ids


def test_machines_of_a_pool_removed_from_the_config_count_toward_the_global_cap(database_url, tmp_path, caplog):
    # $40/h global cap; 8 H100s ($27.12/h) survive from a pool no longer in the config: room for 3 more
    rig = make_rig(database_url, tmp_path, max_hourly_usd=None)
    retired = {rig.cloud.add_foreign_machine("demo", "retired") for _ in range(8)}
    ctl = rig.controller()
    rig.set(queue=400)
    result = ctl.tick()
    plan = result.plan.pool("imagegen")
    assert plan.desired == 3
    assert any("[budget] max_hourly_usd=40" in r.message for r in plan.reasons)
    assert result.plan.burn_now_usd_per_hour == pytest.approx(8 * 3.39)
    assert retired <= live_db_ids(ctl.store) and len(rig.cloud_ids()) == 11
    assert ctl.metrics.registry.get_sample_value("fleet_unmanaged_machines", {"pool": "retired"}) == 8
    assert sum("event=unmanaged_machines" in r.getMessage() for r in caplog.records) == 1
    rig.clock.advance(60)
    ctl.tick()  # the same machines: no second warning
    assert sum("event=unmanaged_machines" in r.getMessage() for r in caplog.records) == 1
    # destroyed by hand: closed, no longer counted, and the freed budget is used
    rig.cloud.destroy(sorted(retired))
    rig.clock.advance(60)
    assert ctl.tick().plan.pool("imagegen").desired == 3  # gone from one listing: still counted
    rig.clock.advance(60)
    result = ctl.tick()
    assert result.plan.pool("imagegen").desired > 3
    assert ctl.metrics.registry.get_sample_value("fleet_unmanaged_machines", {"pool": "retired"}) == 0


def test_a_removed_pool_put_back_with_max_zero_is_emptied(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    retired = {rig.cloud.add_foreign_machine("demo", "retired") for _ in range(2)}
    ctl = rig.controller()
    ctl.tick()
    assert retired <= live_db_ids(ctl.store)
    pools = [*rig.config.pools, rig.config.pools[0].model_copy(update={"name": "retired", "min": 0, "max": 0})]
    rig.config = rig.config.model_copy(update={"pools": tuple(pools)})
    ctl = rig.controller()
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("retired")
    assert plan.desired == 0 and sorted(a for x in plan.actions for a in x.machine_ids) == sorted(retired)
    assert not retired & rig.cloud_ids()


def test_spend_ledger_per_second_with_minimum(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0,
                   scale_up_cooldown_s=0)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    rig.clock.advance(7200)  # 2 h at $3.39
    ctl.tick()
    assert ctl.spend_month_to_date()["imagegen"] == pytest.approx(2 * 3.39, abs=1e-4)
    rig.set(queue=0)
    rig.clock.advance(15)
    ctl.tick()  # destroyed here: billing stops at the destroy
    rig.clock.advance(3600)
    ctl.tick()
    assert ctl.spend_month_to_date()["imagegen"] == pytest.approx(3.39 * (7215 / 3600), abs=1e-4)
    # a machine that lives 10 s is billed the 60 s minimum
    rig.set(queue=4)
    ctl.tick()
    rig.set(queue=0)
    rig.clock.advance(10)
    ctl.tick()
    rig.clock.advance(15)
    ctl.tick()
    assert ctl.spend_month_to_date()["imagegen"] == pytest.approx(3.39 * (7215 + 60) / 3600, abs=1e-4)


# ---------------------------------------------------------------- crash safety


def crashing_store(url: str, method: str) -> Store:
    """The real store, dying once in `method` (a crash mid-tick), handed to the controller like
    any store."""
    original = getattr(Store, method)

    def crashing(self, *args, **kwargs):
        if self.armed:
            self.armed = False
            raise Crash(f"in Store.{method}")
        return original(self, *args, **kwargs)

    engine = make_engine(url)
    ensure_schema(engine)
    return type("CrashingStore", (Store,), {method: crashing, "armed": True})(engine)


SCALE_UP_CRASHES = [
    ("provider", "create", "before"),  # intent written, call never made
    ("provider", "create", "after"),  # machines made, response lost before the database saw it
    ("store", "add_machine", None),  # likewise, inside the recording
    ("store", "finish_action", None),  # machines recorded, outcome not
]
SCALE_DOWN_CRASHES = [
    ("store", "move", None),  # destroy intent written, machines not yet marked
    ("provider", "destroy", "before"),  # marked TERMINATING, call never made
    ("provider", "destroy", "after"),  # destroyed, outcome not recorded
]


def crash_one_tick_then_restart(rig, where: str, call: str, when: str | None):
    """Run one tick that dies at the chosen step, then hand back a fresh controller (a restart)."""
    if where == "provider":
        ctl = rig.controller(providers={"simulated": CrashingCloud(rig.cloud, call, when)})
    else:
        ctl = rig.controller(store=crashing_store(rig.config.fleet.database_url, call))
    with pytest.raises(Crash):
        ctl.tick()
    return rig.controller()


def _converge(rig, ctl, ticks: int = 4) -> None:
    for _ in range(ticks):
        rig.clock.advance(15)
        ctl.tick()


@pytest.mark.parametrize(("where", "call", "when"), SCALE_UP_CRASHES)
def test_crash_during_scale_up_converges(database_url, tmp_path, where, call, when):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0)
    rig.set(queue=12)
    fresh = crash_one_tick_then_restart(rig, where, call, when)
    _converge(rig, fresh)
    assert len(rig.cloud_ids()) == 3, "no machine created twice, none missing"
    assert live_db_ids(fresh.store) == rig.cloud_ids(), "the database believes exactly what exists"


@pytest.mark.parametrize(("where", "call", "when"), SCALE_DOWN_CRASHES)
def test_crash_during_scale_down_converges(database_url, tmp_path, where, call, when):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, scale_down_cooldown_s=0,
                   scale_down_stabilization_s=0)
    rig.set(queue=12)
    rig.controller().tick()
    assert len(rig.cloud_ids()) == 3
    rig.set(queue=4)
    rig.clock.advance(15)
    fresh = crash_one_tick_then_restart(rig, where, call, when)
    _converge(rig, fresh)
    assert len(rig.cloud_ids()) == 1
    assert live_db_ids(fresh.store) == rig.cloud_ids()
    states = {m.provider_id: m.state for m in fresh.store.unfinished_machines()}
    assert set(states.values()) <= {MachineState.BOOTING, MachineState.READY}


# ---------------------------------------------------------------- caps hold through real ticks

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    queues=st.lists(st.integers(0, 200), min_size=3, max_size=8),
    price=st.floats(0.5, 12.0),
    pool_cap=st.floats(1.0, 60.0),
    global_cap=st.floats(1.0, 60.0),
)
def test_caps_never_exceeded_over_random_ticks(tmp_path_factory, queues, price, pool_cap, global_cap):
    import uuid

    tmp = tmp_path_factory.mktemp(f"caps{uuid.uuid4().hex[:6]}")
    rig = make_rig(f"sqlite:///{tmp / 'f.db'}", tmp, price_hourly_usd=price, max_hourly_usd=pool_cap,
                   budget=global_cap, scale_up_cooldown_s=0, scale_down_cooldown_s=0,
                   scale_down_stabilization_s=0, max=50)
    ctl = rig.controller()
    for queue in queues:
        rig.set(queue=queue)
        plan = ctl.tick().plan
        burn = len(rig.cloud_ids()) * price
        assert burn <= min(pool_cap, global_cap) + 1e-9
        # the ledger keeps prices to the micro-dollar: allow that rounding per machine
        slack = 1e-6 * len(rig.cloud_ids())
        assert plan.burn_planned_usd_per_hour <= min(pool_cap, global_cap) + slack
        rig.clock.advance(15)


def test_only_the_lease_holder_acts(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    first, second = rig.controller(holder="replica-a"), rig.controller(holder="replica-b")
    rig.set(queue=12)
    assert not first.tick().dry_run
    standby = second.tick()
    assert standby.dry_run  # observed and planned, changed nothing
    assert len(rig.cloud_ids()) == 3
    rig.clock.advance(first.config.fleet.lease_seconds + 1)  # the leader died: its lease runs out
    assert not second.tick().dry_run
    assert first.tick().dry_run


def test_a_destroy_that_does_not_finish_is_retried_and_reported(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0,
                   destroy_timeout_s=120)
    rig.set(queue=4)
    rig.controller().tick()

    class IgnoresDestroys(CrashingCloud):  # the API accepts the destroy and never does it
        def destroy(self, ids):
            self.asked.append(list(ids))
            return []

    cloud = IgnoresDestroys(rig.cloud, "none", "never")
    cloud.asked = []
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=0)
    notes = []
    for _ in range(10):
        rig.clock.advance(15)
        notes += [n for ns in ctl.tick().notes.values() for n in ns]
    assert len(cloud.asked) >= 3  # asked again every tick once 30 s have passed
    assert any(n.code == "destroy_timeout" and "destroy_timeout_s=120" in n.message for n in notes)
    assert len(rig.cloud_ids()) == 1  # still there, still billed, still tracked
    assert {m.state for m in ctl.store.unfinished_machines()} == {MachineState.TERMINATING}


def test_latency_pool_gets_its_recorded_demand_back_after_a_restart(database_url, tmp_path):
    from fleet.policy.latency import history_window_s

    rig = make_rig(database_url, tmp_path, latency_budget_s=5.0, slots_per_machine=8)
    ctl = rig.controller()
    for queue in (8, 16, 24, 16):
        rig.set(queue=queue)
        result = ctl.tick()
        rig.clock.advance(15)
        # the demand the policy read is on /metrics, for a dashboard beside the desired count
        sample = result.plan.pool("imagegen").demand_sample
        assert sample is not None
        assert ctl.metrics.registry.get_sample_value("fleet_pool_demand_machines", {"pool": "imagegen"}) == sample
    pool = rig.config.pool("imagegen")
    fresh = rig.controller()  # a restart: what the policy learned lives in the database
    hist = fresh.store.history({"imagegen": history_window_s(pool)}, rig.clock.now, previous={"imagegen"}).of("imagegen")
    assert len(hist.demand) == 4
    assert [round(v, 3) for _, v in hist.demand][:1] == [1.0]  # 8 queued items / 8 slots
    times = [t for t, _ in hist.demand]
    assert times == sorted(times) and times[-1] - times[0] == 45  # oldest first, one per tick
    # and the last tick's readings, which the surge compares this tick's queue with
    assert hist.previous is not None and hist.previous.at == times[-1]
    assert hist.previous.ready == result.plan.pool("imagegen").ready
    assert [(r.kind, r.value) for r in hist.previous.readings if r.kind == "queue_depth"] == [("queue_depth", 16)]
    # only for the pools that ask (a surge needs a queue_wait signal): one JSON row per pool a tick
    assert fresh.store.history({"imagegen": history_window_s(pool)}, rig.clock.now).of("imagegen").previous is None


def test_old_decisions_are_pruned_but_history_the_policy_needs_is_kept(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    rig.clock.advance(29 * 86400)
    ctl.tick()
    assert len(ctl.store.recent_decisions("imagegen", 10)) == 2  # within the 30-day retention
    rig.clock.advance(2 * 86400)
    ctl.tick()  # the first row is now 31 days old
    rows = ctl.store.recent_decisions("imagegen", 10)
    assert len(rows) == 2 and all(r["at"] is not None for r in rows)
    ctl.tick()  # pruning runs at most hourly: nothing more goes within the hour
    assert len(ctl.store.recent_decisions("imagegen", 10)) == 3


def test_creates_that_keep_failing_back_off(database_url, tmp_path):
    from providers.base import InvalidRequest

    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0)
    rig.set(queue=4)

    class BadImage(CrashingCloud):
        def create(self, spec):
            self.creates += 1
            raise InvalidRequest("image gpu-nope does not exist")

    cloud = BadImage(rig.cloud, "none", "never")
    cloud.creates = 0
    ctl = rig.controller(providers={"simulated": cloud})
    attempts_at = []
    for _ in range(40):  # 10 minutes of 15 s ticks
        before = cloud.creates
        ctl.tick()
        if cloud.creates > before:
            attempts_at.append(rig.clock.now)
        rig.clock.advance(15)
    gaps = [b - a for a, b in zip(attempts_at, attempts_at[1:], strict=False)]
    assert len(attempts_at) < 8  # not 40
    assert gaps == sorted(gaps) and gaps[-1] >= 120  # 15, 30, 60, 120, ... seconds apart


class ForgetfulListing(CrashingCloud):
    """The embedded cloud, but its listing leaves out the machines in `hidden` (a listing that
    misses machines for a while: eventual consistency, a page that shifted under us)."""

    def __init__(self, inner):
        super().__init__(inner, "none", "never")
        self.hidden: set[str] = set()

    def list_instances(self, fleet):
        return [i for i in self.inner.list_instances(fleet) if i.id not in self.hidden]


def test_machines_missing_from_a_lagging_listing_still_count(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0)

    class LaggingListing(ForgetfulListing):  # new machines show up in the listing a tick late
        def create(self, spec):
            result = self.inner.create(spec)
            self.hidden.update(i.id for i in result.instances)
            return result

        def list_instances(self, fleet):
            listed = super().list_instances(fleet)
            self.hidden.clear()
            return listed

    cloud = LaggingListing(rig.cloud)
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=12)
    ctl.tick()
    rig.clock.advance(15)
    assert ctl.tick().plan.pool("imagegen").actions == ()  # the 3 unlisted machines count
    rig.clock.advance(15)
    ctl.tick()
    assert len(rig.cloud_ids()) == 3
    assert live_db_ids(ctl.store) == rig.cloud_ids()


def forgetful_with_an_hour_old_pool(database_url, tmp_path):
    """Three machines an hour old, behind a listing the test can make forget some."""
    rig = make_rig(database_url, tmp_path)
    cloud = ForgetfulListing(rig.cloud)
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=12)
    ctl.tick()
    rig.clock.advance(3600)
    ctl.tick()
    assert len(rig.cloud_ids()) == 3
    return rig, cloud, ctl


def test_a_machine_one_listing_misses_is_not_replaced_or_closed(database_url, tmp_path):
    rig, cloud, ctl = forgetful_with_an_hour_old_pool(database_url, tmp_path)
    machines = rig.cloud_ids()
    cloud.hidden = {sorted(machines)[0]}
    for _ in range(3):  # 45 s of listings without it: shorter than the grace
        rig.clock.advance(15)
        assert ctl.tick().plan.pool("imagegen").actions == ()  # it still counts: nothing bought
    assert live_db_ids(ctl.store) == machines  # and it is still open (and charged)
    cloud.hidden = set()
    rig.clock.advance(15)
    assert ctl.tick().plan.pool("imagegen").actions == ()
    assert rig.cloud_ids() == machines


def test_a_machine_closed_while_missing_is_reopened_when_listed_again(database_url, tmp_path):
    rig, cloud, ctl = forgetful_with_an_hour_old_pool(database_url, tmp_path)
    machines = rig.cloud_ids()
    missed = sorted(machines)[0]
    cloud.hidden = {missed}
    for _ in range(6):  # 90 s without it: closed, and a replacement bought
        rig.clock.advance(15)
        ctl.tick()
    assert missed not in live_db_ids(ctl.store)
    assert len(rig.cloud_ids()) == 4
    cloud.hidden = set()
    for _ in range(4):  # listed again: the same row, reopened; no tick fails on the unique id
        rig.clock.advance(15)
        ctl.tick()
    assert live_db_ids(ctl.store) == rig.cloud_ids()
    with ctl.store.engine.connect() as conn:
        rows = conn.execute(select(t.machines.c.state, t.machines.c.terminated_at)
                            .where(t.machines.c.provider_id == missed)).all()
        reasons = conn.execute(select(t.machine_events.c.reason).join(
            t.machines, t.machines.c.id == t.machine_events.c.machine_id)
            .where(t.machines.c.provider_id == missed)).scalars().all()
    assert len(rows) == 1 and rows[0].state == "ready" and rows[0].terminated_at is None
    assert any("listed again" in r for r in reasons)


def test_a_machine_whose_destroy_keeps_failing_is_still_charged(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    born = rig.clock.now

    class RefusesDestroys(CrashingCloud):  # every destroy answered with a server error
        def destroy(self, ids):
            return [DestroyFailure(i, TransientError("500 from the API")) for i in ids]

    ctl = rig.controller(providers={"simulated": RefusesDestroys(rig.cloud, "none", "never")})
    rig.clock.advance(600)
    rig.set(queue=0)
    ctl.tick()  # scale down: the destroy fails, and keeps failing
    for _ in range(4 * 60):  # an hour of retries
        rig.clock.advance(15)
        ctl.tick()
    assert len(rig.cloud_ids()) == 1
    lived = rig.clock.now - born
    # charged to the last minute the provider still listed it (the ledger is written once a minute)
    assert ctl.spend_month_to_date()["imagegen"] == pytest.approx(3.39 * lived / 3600, abs=3.39 / 60)


def test_a_machine_adopted_on_its_way_out_has_its_destroy_retried(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    stray = rig.cloud.add_foreign_machine("demo", "imagegen")

    class StuckStopping(CrashingCloud):  # the provider lists it as terminating (EC2 "stopping")
        def list_instances(self, fleet):
            return [replace(i, status=InstanceStatus.TERMINATING) if i.id == stray else i
                    for i in self.inner.list_instances(fleet)]

    ctl = rig.controller(providers={"simulated": StuckStopping(rig.cloud, "none", "never")})
    ctl.tick()
    (row,) = [m for m in ctl.store.unfinished_machines() if m.provider_id == stray]
    assert row.state is MachineState.TERMINATING and row.terminating_at == rig.clock.now
    for _ in range(4):
        rig.clock.advance(15)
        ctl.tick()
    assert stray not in rig.cloud_ids()  # asked again once the provider had time: destroyed


def test_a_tick_that_outlasts_its_lease_does_not_act(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    standby = rig.controller(holder="replica-b")
    lease = rig.config.fleet.lease_seconds

    class SlowListing(CrashingCloud):  # the listing takes longer than the lease (429 waits, say)
        def list_instances(self, fleet):
            rig.clock.advance(lease + 1)
            assert standby.store.try_lease("controller", "replica-b", lease, rig.clock.now)  # taken over
            return self.inner.list_instances(fleet)

    leader = rig.controller(holder="replica-a", providers={"simulated": SlowListing(rig.cloud, "none", "never")})
    rig.set(queue=12)
    result = leader.tick()
    assert result.dry_run and rig.cloud_ids() == set()  # planned, and left the acting to replica-b
    assert not standby.tick().dry_run and len(rig.cloud_ids()) == 3


def test_a_clean_stop_hands_the_lease_over_at_once(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    first, second = rig.controller(holder="replica-a"), rig.controller(holder="replica-b")
    rig.set(queue=4)
    assert not first.tick().dry_run
    assert second.tick().dry_run
    first.release_lease()
    assert not second.tick().dry_run  # no lease_seconds of standby after a clean stop



def test_a_create_retried_after_a_crash_starts_the_cooldown_again(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=300, max_hourly_usd=100.0, budget=100.0)
    rig.set(queue=12)
    ctl = rig.controller(providers={"simulated": CrashingCloud(rig.cloud, "create", "before")})
    with pytest.raises(Crash):
        ctl.tick()  # killed before the create reached the API
    rig.clock.advance(285)  # the restart took a few minutes
    ctl = rig.controller()
    ctl.tick()  # the lost create is retried under its token: 3 machines
    assert len(rig.cloud_ids()) == 3
    rig.set(queue=40)
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")
    assert len(rig.cloud_ids()) == 3, "a scale-up 15 s after the last one, with a 300 s cooldown"
    assert any(r.code == "cooldown" for r in plan.reasons)


def test_a_destroyed_machine_a_stale_listing_shows_again_stays_on_its_way_out(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0)
    rig.set(queue=4)
    rig.controller().tick()
    (gone,) = rig.cloud.list_instances("demo")

    class StaleListing(CrashingCloud):  # shows the destroyed machine once more, as it was
        def list_instances(self, fleet):
            listed = self.inner.list_instances(fleet)
            if self.ghost:
                self.ghost -= 1
                listed.append(gone)
            return listed

    cloud = StaleListing(rig.cloud, "none", "never")
    cloud.ghost = 0
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=0)
    rig.clock.advance(600)
    ctl.tick()  # destroyed
    rig.clock.advance(15)
    ctl.tick()  # gone from the listing: closed
    assert live_db_ids(ctl.store) == set() and rig.cloud_ids() == set()
    cloud.ghost = 1
    rig.set(queue=4)  # work again, for one machine
    rig.clock.advance(15)
    ctl.tick()
    ghost = [m for m in ctl.store.unfinished_machines() if m.provider_id == gone.id]
    assert [m.state for m in ghost] == [MachineState.TERMINATING]
    assert len(rig.cloud_ids()) == 1  # the ghost is no capacity: a real machine was bought
    rig.clock.advance(15)
    ctl.tick()
    assert gone.id not in live_db_ids(ctl.store)  # gone again: closed again


def test_a_late_queue_that_grows_surges_through_the_database(database_url, tmp_path):
    # fleet run: the previous tick's readings come back from the decisions table, so a queue
    # growing past the budget asks for the surge at once (fleet/policy/latency.py `surge`)
    def source(key):
        return {"type": "file", "path": str(tmp_path / "signals.json"), "key": key}

    rig = make_rig(database_url, tmp_path, latency_budget_s=5.0, slots_per_machine=8, max=40,
                   max_hourly_usd=200.0, signals=[
                       {"kind": "queue_depth", "source": source("queue")},
                       {"kind": "gpu_utilization", "source": source("util")},
                       {"kind": "queue_wait", "source": source("wait")}])
    ctl = rig.controller()
    rig.set(queue=24, util=1.0, wait=3.0)  # queued work waiting past half the budget: buys
    for _ in range(15):  # machines bought and booted (boot 180 s), two of them busy
        first = ctl.tick().plan.pool("imagegen")
        rig.clock.advance(15)
    assert first.ready >= 2
    # 1,000 -> 3,000 queued in 15 s, the work starting waited 20 s on both reads: a surge of
    # 2 busy / 15.87 completing a second x (149.2 arriving + 2,984 waiting / 180 s boot) = 20.9
    rig.set(queue=1000, util=1.0, wait=20.0)
    ctl.tick()
    rig.clock.advance(15)
    rig.set(queue=3000, util=1.0, wait=20.0)
    plan = ctl.tick().plan.pool("imagegen")
    assert any("surge 20.90" in r.message for r in plan.reasons), plan.reasons
    assert plan.recommendation == 21
    assert plan.desired == 11  # and the fleet's $40/h budget still caps what is bought
