"""Faults that must not cost money (issue 21): each test drives real ticks on SQLite and
PostgreSQL with a steppable clock and checks what the cloud and the ledger hold."""

from __future__ import annotations

import pytest

from tests.tick_helpers import make_rig

PRICE = 3.39  # the simulated cloud's H100, $/h


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
