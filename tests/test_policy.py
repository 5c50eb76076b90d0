"""Table-driven tests of the pure policy (fleet/policy/)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.model import CreateAction, DestroyAction, History, MachineState, PoolView
from fleet.policy import decide
from tests import builders
from tests.policy_helpers import NOW, fleet_of, history, machines, make_config, reading, view

QUEUE = {"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 0}}
UTIL = {"kind": "gpu_utilization", "target": 0.7, "source": {"type": "static", "value": 0}}
BACKLOG = {"kind": "backlog_seconds", "seconds_per_item": 30, "drain_seconds": 60,
           "source": {"type": "static", "value": 0}}
MEMORY = {"kind": "memory_pressure", "target": 0.8, "source": {"type": "static", "value": 0}}


def plan_for(cfg, v, readings, hist=None, now=NOW):
    return decide(cfg, fleet_of(v), {"p": tuple(readings)}, hist or History(), now).pool("p")


@pytest.mark.parametrize(
    ("signals", "values", "ready", "booting", "expected"),
    [
        ([QUEUE], [12], 0, 0, 3),  # ceil(12 / 4)
        ([QUEUE], [13], 0, 0, 4),
        ([QUEUE], [0], 3, 0, 0),
        ([UTIL], [0.9], 4, 0, 6),  # ceil(4 * 0.9 / 0.7) = ceil(5.14)
        ([UTIL], [0.35], 4, 0, 2),
        ([BACKLOG], [10], 0, 0, 5),  # 10 items * 30 s / 60 s
        ([MEMORY], [0.95], 2, 0, 3),  # above target: at least one more
        ([MEMORY], [0.5], 2, 0, 0),  # below target: no upward push, nothing else asks: scale in
        ([QUEUE, UTIL], [4, 0.95], 4, 0, 6),  # the highest recommendation wins
        ([QUEUE], [12], 0, 3, 3),  # booting machines count: nothing to add
    ],
)
def test_recommendations(signals, values, ready, booting, expected):
    cfg = make_config(signals=signals, tolerance=0, max_step_up=100)
    readings = [reading(v, kind=s["kind"], name=f"s{i}") for i, (s, v) in enumerate(zip(signals, values, strict=True))]
    plan = plan_for(cfg, view(ready, booting), readings)
    assert plan.desired == expected


def test_queue_of_12_creates_3():
    plan = plan_for(make_config(signals=[QUEUE]), view(), [reading(12)])
    assert plan.actions == (CreateAction(pool="p", count=3, size="gpu-h100x1-80gb", region="",
                                         price_hourly_usd=3.0),)


def test_missing_signal_never_scales_down_but_may_scale_up():
    cfg = make_config(signals=[QUEUE, UTIL])
    down = plan_for(cfg, view(ready=5), [reading(0), reading(None, kind="gpu_utilization")])
    assert down.desired == 5 and not down.actions
    assert any(r.code == "missing_signal" for r in down.reasons)
    up = plan_for(cfg, view(ready=2), [reading(40), reading(None, kind="gpu_utilization")])
    assert up.desired == 6  # 2 + step limit of 4


def test_all_signals_missing_holds():
    plan = plan_for(make_config(signals=[QUEUE]), view(ready=3), [reading(None)])
    assert plan.desired == 3 and not plan.actions


def test_utilization_with_nothing_ready_is_no_opinion_not_zero():
    plan = plan_for(make_config(signals=[UTIL]), view(booting=2), [reading(0.0, kind="gpu_utilization")])
    assert plan.desired == 2


def test_tolerance_holds_small_changes():
    cfg = make_config(signals=[UTIL], tolerance=0.1)
    plan = plan_for(cfg, view(ready=10), [reading(0.75, kind="gpu_utilization")])  # wants 11: +10%
    assert plan.desired == 10
    assert [r.code for r in plan.reasons if r.code == "tolerance"]


def test_stabilization_keeps_highest_recent_recommendation():
    cfg = make_config(signals=[QUEUE], scale_down_stabilization_s=300)
    hist = history(recommendations=((NOW - 400, 9), (NOW - 200, 6), (NOW - 100, 5)))
    plan = plan_for(cfg, view(ready=8), [reading(4)], hist)
    assert plan.desired == 6  # 9 is older than the window
    assert any(r.code == "stabilization" for r in plan.reasons)


def test_cooldowns_from_history():
    cfg = make_config(signals=[QUEUE], scale_up_cooldown_s=30, scale_down_cooldown_s=300)
    up = plan_for(cfg, view(ready=1), [reading(20)], history(last_scale_up_at=NOW - 10))
    assert up.desired == 1 and "20s left" in " ".join(map(str, up.reasons))
    up_later = plan_for(cfg, view(ready=1), [reading(20)], history(last_scale_up_at=NOW - 31))
    assert up_later.desired == 5
    down = plan_for(cfg, view(ready=4), [reading(0)], history(last_scale_up_at=NOW - 100))
    assert down.desired == 4
    down_later = plan_for(cfg, view(ready=4), [reading(0)], history(last_scale_up_at=NOW - 301))
    assert down_later.desired == 0


@pytest.mark.parametrize(("current", "wanted", "expected"), [(0, 20, 4), (3, 20, 7), (10, 40, 20), (6, 8, 8)])
def test_step_limit(current, wanted, expected):
    cfg = make_config(signals=[QUEUE], max=100, tolerance=0)
    assert plan_for(cfg, view(ready=current), [reading(wanted * 4)]).desired == expected


def test_min_max():
    cfg = make_config(signals=[QUEUE], min=2, max=5, max_step_up=100)
    assert plan_for(cfg, view(), [reading(0)]).desired == 2
    assert plan_for(cfg, view(), [reading(400)]).desired == 5


def test_quota_headroom_caps_scale_up():
    cfg = make_config(signals=[QUEUE])
    plan = plan_for(cfg, view(ready=1, headroom=2, headroom_note="quota 3 machines"), [reading(40)])
    assert plan.desired == 3
    assert any(r.code == "quota" and "quota 3 machines" in r.message for r in plan.reasons)


def test_budget_cap_names_the_cap():
    cfg = make_config(budget=10.0, signals=[QUEUE])
    plan = plan_for(cfg, view(price=3.0), [reading(16)])
    assert plan.desired == 3  # 3 x $3 = $9 <= $10
    assert any(r.code == "budget" and "max_hourly_usd=10" in r.message for r in plan.reasons)


def test_pool_budget_counts_running_machines():
    cfg = make_config(signals=[QUEUE], max_hourly_usd=10.0, max_step_up=100)
    plan = plan_for(cfg, view(ready=2, price=3.0), [reading(40)])
    assert plan.desired == 3  # $6 running + one more at $3


def test_unknown_price_with_a_cap_launches_nothing():
    cfg = make_config(budget=100.0, signals=[QUEUE])
    v = PoolView(name="p", launch_price_hourly_usd=None)
    plan = plan_for(cfg, v, [reading(16)])
    assert plan.desired == 0 and "unknown" in " ".join(map(str, plan.reasons))


def test_listing_error_holds_everything():
    plan = plan_for(make_config(signals=[QUEUE]), view(ready=3, listing_error="list failed: 500"), [reading(0)])
    assert plan.held and plan.desired == 3 and not plan.actions


def test_scale_down_removes_booting_first_then_least_busy():
    cfg = make_config(signals=[QUEUE])
    plan = plan_for(cfg, view(ready=3, booting=2), [reading(4)])
    (destroy,) = plan.actions
    assert isinstance(destroy, DestroyAction)
    assert destroy.machine_ids == ("b1", "b0", "r0", "r1")  # newest booting first, then least work


def test_machine_stuck_booting_is_replaced():
    cfg = make_config(signals=[QUEUE], max_boot_seconds=900)
    stuck = machines(booting=1, created_at=NOW - 1000)
    v = PoolView(name="p", machines=stuck, launch_price_hourly_usd=3.0)
    plan = plan_for(cfg, v, [reading(4)])
    kinds = {type(a) for a in plan.actions}
    assert kinds == {CreateAction, DestroyAction}
    assert any(r.code == "replace" for r in plan.reasons)


def test_decide_is_deterministic_and_pure():
    cfg = make_config(signals=[QUEUE])
    a = plan_for(cfg, view(ready=2), [reading(20)])
    b = plan_for(cfg, view(ready=2), [reading(20)])
    assert a == b


@settings(max_examples=300, deadline=None)
@given(
    pools=st.lists(
        st.tuples(
            st.integers(0, 6),  # ready
            st.integers(0, 3),  # booting
            st.floats(0.1, 30.0),  # price
            st.floats(0, 500),  # queue value
            st.one_of(st.none(), st.floats(1.0, 200.0)),  # pool cap
        ),
        min_size=1, max_size=4,
    ),
    global_cap=st.one_of(st.none(), st.floats(1.0, 300.0)),
    unmanaged=st.tuples(st.integers(0, 5), st.floats(0.1, 30.0)),  # machines of a pool no longer configured
)
def test_budget_caps_are_never_exceeded_by_new_launches(pools, global_cap, unmanaged):
    configured, views, signals = [], {}, {}
    for i, (ready, booting, price, value, cap) in enumerate(pools):
        configured.append(builders.pool(f"p{i}", max=50, max_step_up=50, scale_up_cooldown_s=0, signals=[QUEUE],
                                        max_hourly_usd=cap if cap is not None else builders.UNSET))
        views[f"p{i}"] = PoolView(name=f"p{i}", machines=machines(ready, booting, price, pool=f"p{i}"),
                                  launch_price_hourly_usd=price)
        signals[f"p{i}"] = (reading(value),)
    cfg = builders.make_config(*configured, budget=global_cap)
    from fleet.model import Fleet

    fleet = Fleet(pools=views, unmanaged=machines(unmanaged[0], 0, unmanaged[1], pool="retired"))
    plan = decide(cfg, fleet, signals, History(), NOW)
    total_new = 0.0
    for pool_cfg, pool_plan in zip(cfg.pools, plan.pools, strict=True):
        v = views[pool_cfg.name]
        new = sum(a.count for a in pool_plan.actions if isinstance(a, CreateAction)) * v.launch_price_hourly_usd
        total_new += new
        if new and pool_cfg.max_hourly_usd is not None:
            assert v.burn_usd_per_hour + new <= pool_cfg.max_hourly_usd + 1e-6
    # counted here from the parts, so a Fleet that forgot the unconfigured pool's machines fails
    existing = sum(v.burn_usd_per_hour for v in views.values()) + unmanaged[0] * unmanaged[1]
    if total_new and global_cap is not None:
        assert existing + total_new <= global_cap + 1e-6
    assert math.isclose(plan.burn_planned_usd_per_hour,
                        fleet.burn_usd_per_hour + total_new - sum(
                            m.price_hourly_usd for p in plan.pools for a in p.actions
                            if isinstance(a, DestroyAction) for m in views[p.pool].machines
                            if m.id in a.machine_ids), rel_tol=1e-9, abs_tol=1e-9)
    for p in plan.pools:
        assert all(m.state is not MachineState.TERMINATED for m in views[p.pool].machines)


def test_each_pool_step_hands_the_budget_left_to_the_next():
    # the global cap is a value passed along: the pool's step returns its plan and what is left
    from fleet.model import PoolHistory
    from fleet.policy.clamps import Budget
    from fleet.policy.decide import decide_pool

    cfg = make_config(budget=10.0, signals=[QUEUE])
    budget = Budget(cap=10.0, burn=3.0)
    plan, left = decide_pool(cfg.pools[0], view(ready=1, price=3.0), (reading(16),), PoolHistory(), NOW, budget)
    assert plan.desired == 3 and left == Budget(cap=10.0, burn=9.0)  # two more at $3 under the $10 cap
    assert budget == Budget(cap=10.0, burn=3.0)  # the budget handed in is not changed
    _, none_left = decide_pool(cfg.pools[0], view(ready=1, price=3.0), (reading(16),), PoolHistory(), NOW, left)
    assert none_left == left  # the next pool finds $1/h left: no machine fits


def test_the_clamps_chain_in_order_each_giving_its_reason():
    from fleet.policy import clamps

    pool = make_config(signals=[QUEUE], max=5).pools[0]  # step limit from 2 ready: +4 a tick
    step, top = (lambda n: clamps.step_limit(pool, 2, n)), (lambda n: clamps.min_max(pool, n))
    assert clamps.limit(9, (step, top)) == (5, tuple(r for r in (step(9)[1], top(6)[1])))
    desired, reasons = clamps.limit(9, (top, step))
    assert desired == 5 and [r.code for r in reasons] == ["max"]  # 5 is within the step: one reason
