"""Faults that must not cost money (issue 21): each test drives real ticks on SQLite and
PostgreSQL with a steppable clock and checks what the cloud and the ledger hold."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tick_helpers import Crash, CrashingCloud, make_rig

ROOT = Path(__file__).resolve().parents[1]

PRICE = 3.39  # the simulated cloud's H100, $/h


def live_db_ids(store) -> set[str]:
    return {m.provider_id for m in store.unfinished_machines()}


def _spend(ctl) -> float:
    return sum(ctl.spend_month_to_date().values())


def test_a_clock_a_day_ahead_and_back_bills_what_ran_and_blocks_no_scale_up(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=30)
    ctl = rig.controller()
    rig.set(queue=12)
    ctl.tick()  # 3 machines
    for _ in range(4):
        rig.clock.advance(15)
        ctl.tick()
    rig.clock.step(86_400)  # the wall clock runs a day ahead ...
    rig.set(queue=16)
    for _ in range(2):
        rig.clock.advance(15)
        ctl.tick()  # ... and a scale-up is stamped a day ahead
    assert len(rig.cloud_ids()) == 4
    rig.clock.step(-86_400)  # ... and comes back
    rig.set(queue=20)
    rig.clock.advance(15)
    ctl.tick()  # a time that never came is read as now: at most one cooldown more, not a day
    rig.clock.advance(31)
    ctl.tick()
    assert len(rig.cloud_ids()) == 5
    rig.clock.advance(60)
    ctl.tick()
    ran_s = rig.clock.mono  # every machine ran at most this long
    assert _spend(ctl) <= 5 * PRICE * (ran_s + 60) / 3600  # the day that never passed is not billed
    assert _spend(ctl) >= 3 * PRICE * (ran_s - 60) / 3600  # and what ran is


@pytest.mark.parametrize("step", [-3600.0, -86_400.0])
def test_a_backward_step_blocks_a_scale_up_no_longer_than_its_cooldown(database_url, tmp_path, step):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=30)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    rig.clock.step(step)
    rig.set(queue=12)
    rig.clock.advance(15)
    first = ctl.tick().plan.pool("imagegen")
    assert [r.code for r in first.reasons if r.code == "cooldown"] == ["cooldown"]
    rig.clock.advance(31)
    ctl.tick()
    assert len(rig.cloud_ids()) == 3  # grew one cooldown after the step, not an hour or a day later


# ---------------------------------------------------------------- one replica acts


def test_two_containers_with_one_hostname_and_pid_1_hold_different_lease_ids():
    code = ("import os, socket; os.getpid = lambda: 1; socket.gethostname = lambda: 'fleet'; "
            "from fleet.wiring import default_holder; print(default_holder())")
    env = {k: v for k, v in os.environ.items() if k != "FLEET_REPLICA_ID"}
    env["PYTHONPATH"] = str(ROOT)
    ids = {subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip() for _ in range(2)}
    assert len(ids) == 2 and all(i.startswith("fleet:1:") for i in ids)


class SlowCreate(CrashingCloud):
    """A create call that takes `seconds` of (virtual) time, during which `meanwhile` runs."""

    def __init__(self, inner, clock, seconds: float, meanwhile):
        super().__init__(inner, "none", "never")
        self.clock, self.seconds, self.meanwhile = clock, seconds, meanwhile

    def create(self, spec):
        self.meanwhile(self.seconds)
        return self.inner.create(spec)


def test_a_create_slower_than_the_lease_keeps_the_lease_while_the_leader_lives(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    lease = rig.config.fleet.lease_seconds
    standby = rig.controller(holder="replica-b")
    seen = []

    def slow(seconds):
        for _ in range(int(seconds // 10)):
            rig.clock.advance(10)
            assert leader.keeper.wait_for_beat(timeout_s=10)  # the heartbeat renews the lease meanwhile
        seen.append(standby.tick())

    leader = rig.controller(holder="replica-a", renew_every_s=0.01,
                            providers={"simulated": SlowCreate(rig.cloud, rig.clock, 3 * lease, slow)})
    rig.set(queue=12)
    assert not leader.tick().dry_run
    assert [r.dry_run for r in seen] == [True]  # the standby planned, and bought nothing
    assert seen[0].plan.pool("imagegen").actions == ()  # the leader's create counted as on its way
    assert len(rig.cloud_ids()) == 3 and live_db_ids(leader.store) == rig.cloud_ids()


def test_a_frozen_leader_writes_nothing_past_its_lease_and_nothing_is_bought_twice(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_down_cooldown_s=0, scale_down_stabilization_s=0)
    lease = rig.config.fleet.lease_seconds
    standby = rig.controller(holder="replica-b")
    took_over = []

    def frozen(seconds):  # the leader's process is stopped: no heartbeat
        rig.clock.advance(seconds)
        took_over.append(not standby.tick().dry_run)

    leader = rig.controller(holder="replica-a", renew_every_s=3600,
                            providers={"simulated": SlowCreate(rig.cloud, rig.clock, lease + 1, frozen)})
    rig.set(queue=12)
    leader.tick()
    assert took_over == [True]
    with standby.store.engine.connect() as conn:
        epochs = dict(conn.exec_driver_sql("SELECT token, lease_epoch FROM actions").all())
    assert sorted(epochs.values()) == [1, 2]  # each replica's create under its own epoch
    assert live_db_ids(standby.store) <= rig.cloud_ids()
    assert len(live_db_ids(standby.store)) == 3  # the frozen leader recorded nothing past its lease
    for _ in range(30):
        rig.clock.advance(15)
        standby.tick()
        assert len(rig.cloud_ids()) <= rig.config.pools[0].max
    assert len(rig.cloud_ids()) == 3 and live_db_ids(standby.store) == rig.cloud_ids()


# ---------------------------------------------------------------- lagging listings after a crash


def test_a_create_whose_machines_a_listing_shows_late_is_not_made_twice(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0)

    class CrashThenLag(CrashingCloud):  # dies right after a create whose machines are listed 45 s late
        def __init__(self, inner):
            super().__init__(inner, "create", "after")
            self.hidden: set[str] = set()
            self.until = 0.0

        def create(self, spec):
            result = self.inner.create(spec)
            if self.armed:
                self.armed, self.until = False, rig.clock.now + 45
                self.hidden = {i.id for i in result.instances}
                raise Crash("after create")
            return result

        def list_instances(self, fleet):
            lagging = rig.clock.now < self.until
            return [i for i in self.inner.list_instances(fleet) if not (lagging and i.id in self.hidden)]

    cloud = CrashThenLag(rig.cloud)
    rig.set(queue=16)  # 4 machines (the step limit's first step)
    with pytest.raises(Crash):
        rig.controller(providers={"simulated": cloud}).tick()
    restarted = rig.controller(providers={"simulated": cloud})
    for _ in range(6):
        rig.clock.advance(15)
        restarted.tick()
    assert len(rig.cloud_ids()) == 4  # not 8
    assert live_db_ids(restarted.store) == rig.cloud_ids()


# ---------------------------------------------------------------- inputs that overflow after acting


@pytest.mark.parametrize("queue", [1e308, 1e10])  # past a float column on SQLite, a 32-bit one on PostgreSQL
def test_a_huge_reading_is_acted_on_recorded_and_billed(database_url, tmp_path, queue):
    rig = make_rig(database_url, tmp_path)
    ctl = rig.controller()
    rig.set(queue=queue)
    ctl.tick()
    assert len(rig.cloud_ids()) == 4  # the step limit's first step
    rig.clock.advance(75)
    ctl.tick()
    (last, first) = ctl.store.recent_decisions("imagegen", 2)
    assert first["desired"] == 4 and first["recommendation"] == 2**31 - 1  # stored at what the column holds
    assert _spend(ctl) == pytest.approx(4 * PRICE * 75 / 3600, rel=0.05)


def test_a_failure_while_acting_still_records_the_decision_and_the_spend(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0)
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    rig.clock.advance(75)
    rig.set(queue=8)
    broken = rig.controller(providers={"simulated": CrashingCloud(rig.cloud, "create", "before")})
    with pytest.raises(Crash):
        broken.tick()  # a bug in the act, not a provider error
    assert len(ctl.store.recent_decisions("imagegen", 10)) == 2
    assert _spend(ctl) == pytest.approx(PRICE * 75 / 3600, rel=0.05)


def test_a_huge_retention_does_not_stop_the_tick(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    config = rig.config.model_copy(update={"fleet": rig.config.fleet.model_copy(
        update={"decisions_retention_days": 1_000_000})})
    rig.config = config
    ctl = rig.controller()
    rig.set(queue=4)
    ctl.tick()
    assert len(ctl.store.recent_decisions("imagegen", 10)) == 1


def test_a_crash_between_marking_and_destroying_leaves_nothing_running_outside_capacity(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, scale_down_cooldown_s=0,
                   scale_down_stabilization_s=0, max_hourly_usd=40.0, budget=40.0)
    ctl = rig.controller()
    rig.set(queue=40)
    for _ in range(3):
        ctl.tick()
        rig.clock.advance(15)
    assert len(rig.cloud_ids()) == 10
    rig.set(queue=24)
    with pytest.raises(Crash):  # 4 marked TERMINATING, the destroy never sent
        rig.controller(providers={"simulated": CrashingCloud(rig.cloud, "destroy", "before")}).tick()
    restarted = rig.controller()
    rig.set(queue=40)
    for _ in range(3):
        rig.clock.advance(15)
        restarted.tick()
        assert len(rig.cloud_ids()) <= 10  # the max holds for what runs, not only for capacity
    assert len(rig.cloud_ids()) == 10


# ---------------------------------------------------------------- prices change


class Repriced(CrashingCloud):
    """The embedded cloud after its price for every size changed to `price` (when set)."""

    def __init__(self, inner):
        super().__init__(inner, "none", "never")
        self.new_price: float | None = None

    def price(self, size, region=None):
        return self.new_price if self.new_price is not None else self.inner.price(size, region)

    def list_instances(self, fleet):
        listed = self.inner.list_instances(fleet)
        if self.new_price is None:
            return listed
        return [replace(i, price_hourly_usd=self.new_price) for i in listed]


def test_burn_is_counted_at_the_current_price_after_a_rise(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, max_hourly_usd=15.0,
                   budget={"max_hourly_usd": 100.0, "over_cap": "warn"})  # tests/test_budget_shed.py sheds
    cloud = Repriced(rig.cloud)
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=16)
    ctl.tick()
    assert len(rig.cloud_ids()) == 4  # $13.56/h of a $15 cap
    cloud.new_price = 8.75  # 4 x 8.75 = $35/h now
    rig.set(queue=20)
    rig.clock.advance(15)
    plan = ctl.tick().plan
    assert plan.burn_now_usd_per_hour == pytest.approx(35.0)
    assert plan.pool("imagegen").actions == () and len(rig.cloud_ids()) == 4  # nothing more bought
    rows = ctl.store.unfinished_machines()
    assert {r.price_hourly_usd for r in rows} == {PRICE}  # the ledger keeps what they were bought at


def test_the_price_unknown_reason_names_the_size_without_a_price(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, size=["gpu-h100x1-80gb", "gpu-mystery"])
    rig.set(queue=4)
    plan = rig.controller().tick(dry_run=True).plan.pool("imagegen")
    (budget,) = [r for r in plan.reasons if r.code == "budget"]
    assert "gpu-mystery" in budget.message and "gpu-h100x1-80gb" not in budget.message
