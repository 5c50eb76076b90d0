"""A cap below the current burn (lowered, or a price rose) sheds machines in the pool's removal
order, or with `[budget] over_cap = "warn"` only says so; through real ticks."""

from __future__ import annotations

import pytest

from tests.test_faults import Repriced
from tests.tick_helpers import make_rig


def _lower_cap(rig, cap: float, over_cap: str = "shed"):
    pool = rig.config.pools[0].model_copy(update={"max_hourly_usd": cap})
    budget = rig.config.budget.model_copy(update={"over_cap": over_cap})
    rig.config = rig.config.model_copy(update={"pools": (pool,), "budget": budget})


@pytest.mark.parametrize(("over_cap", "left", "code"), [("shed", 2, "budget_shed"), ("warn", 4, "budget_over")])
def test_a_cap_lowered_below_the_burn(database_url, tmp_path, over_cap, left, code):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, scale_down_cooldown_s=0,
                   scale_down_stabilization_s=0)
    rig.set(queue=16)
    rig.controller().tick()
    assert len(rig.cloud_ids()) == 4  # $13.56/h
    _lower_cap(rig, 10.0, over_cap)
    rig.clock.advance(15)
    plan = rig.controller().tick().plan.pool("imagegen")
    assert len(rig.cloud_ids()) == left  # 2 x $3.39 fits $10/h; warn keeps all 4
    assert [r.code for r in plan.reasons if r.code.startswith("budget")] == [code]


def test_a_price_rise_past_the_cap_sheds_to_fit(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, scale_down_cooldown_s=0,
                   scale_down_stabilization_s=0, max_hourly_usd=15.0, budget=100.0)
    cloud = Repriced(rig.cloud)
    ctl = rig.controller(providers={"simulated": cloud})
    rig.set(queue=16)
    ctl.tick()
    cloud.new_price = 8.75  # 4 x 8.75 = $35/h against $15
    rig.clock.advance(15)
    ctl.tick()
    assert len(rig.cloud_ids()) == 1  # $8.75/h


def test_pools_over_a_shared_cap_shed_the_excess_once_not_each():
    from fleet.model import DestroyAction, Fleet, History, PoolView
    from fleet.policy import decide
    from tests import builders
    from tests.policy_helpers import NOW, machines, reading

    cfg = builders.make_config(builders.pool("a", scale_down_cooldown_s=0, scale_down_stabilization_s=0),
                               builders.pool("b", scale_down_cooldown_s=0, scale_down_stabilization_s=0),
                               budget=14.0)
    views = {p: PoolView(name=p, machines=machines(3, 0, 3.39, pool=p), launch_price_hourly_usd=3.39)
             for p in ("a", "b")}
    plan = decide(cfg, Fleet(pools=views), {p: (reading(12),) for p in ("a", "b")}, History(), NOW)
    shed = sum(len(a.machine_ids) for p in plan.pools for a in p.actions if isinstance(a, DestroyAction))
    assert shed == 2  # $20.34/h over $14/h: two machines, not two per pool
    assert [r.code for r in plan.pool("a").reasons if r.code == "budget_shed"] == ["budget_shed"]
