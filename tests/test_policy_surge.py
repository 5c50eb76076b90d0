"""The latency policy's surge: sizing from how fast a late queue grows (fleet/policy/latency.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fleet.model import PoolHistory, PreviousTick, SignalReading
from fleet.policy.latency import reads_previous_tick, recommend, surge
from fleet.policy.settings import DEFAULT
from fleet.sim.run import run_policy, scenario
from fleet.sim.trace import from_arrays
from tests.policy_helpers import NOW, make_config, view

BOOT = 180.0
SURGE_MAX = DEFAULT.surge_max
QUEUE_WAIT = [{"kind": "queue_wait", "source": {"type": "static", "value": 0}}]


def pool():
    return make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100,
                       signals=QUEUE_WAIT).pools[0]


def tick(queue: float, util: float, wait: float | None = None) -> tuple[SignalReading, ...]:
    out = (SignalReading("queue_depth", "queue_depth", queue, "test"),
           SignalReading("gpu_utilization", "gpu_utilization", util, "test"))
    return out if wait is None else (*out, SignalReading("queue_wait", "queue_wait", wait, "test"))


def before(queue: float, util: float, ready: int, ago: float = 15.0, wait: float = 12.0) -> PreviousTick:
    return PreviousTick(NOW - ago, ready, tick(queue, util, wait))


def test_only_latency_pools_with_queue_wait_read_the_previous_tick() -> None:
    assert reads_previous_tick(pool())
    assert not reads_previous_tick(make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT).pools[0])
    assert not reads_previous_tick(make_config().pools[0])


def test_surge_by_hand() -> None:
    # 2 busy machines (16 slots); the queue grew from 1,000 to 1,600 in 15 s and the work starting
    # now waited 20 s: 1,584 waiting arrived within 20 s = 79.2/s; completions 79.2 - 40 = 39.2/s;
    # arrivals need 2 x 79.2 / 39.2 machines, the 1,584 waiting cleared within a boot 2 x 8.8 / 39.2
    got = surge(pool(), tick(1600, 1.0, 20.0), 2, before(1000, 1.0, 2), NOW)
    assert got == pytest.approx(2 * (79.2 + 1584 / BOOT) / 39.2)


def test_a_queue_growing_as_fast_as_work_arrives_is_bounded() -> None:
    # growth at or above the arrival estimate would mean nothing completes: counted as 1/SURGE_MAX
    # (3,000 waiting within 10 s = 300/s; the queue grew 3,000 in 5 s = 600/s)
    got = surge(pool(), tick(3016, 1.0, 10.0), 2, before(16, 1.0, 2, ago=5.0), NOW)
    assert got == pytest.approx(2 * SURGE_MAX * (1 + 10.0 / BOOT))


def test_capacity_that_came_up_between_reads_counts_as_the_fewer_busy() -> None:
    # 9 machines became ready during the interval: the completions were served by about 1
    one = surge(pool(), tick(3000, 1.0, 100.0), 10, before(2900, 1.0, 1), NOW)
    ten = surge(pool(), tick(3000, 1.0, 100.0), 10, before(2900, 1.0, 10), NOW)
    assert one is not None and ten is not None and one == pytest.approx(ten / 10)


@pytest.mark.parametrize("readings, previous", [
    (tick(1600, 1.0, 5.0), before(1000, 1.0, 2)),  # the work starting waited within the budget
    (tick(1600, 1.0), before(1000, 1.0, 2)),  # no queue_wait reading
    (tick(1600, 1.0, 20.0), None),  # no previous tick (a first tick)
    (tick(1600, 1.0, 20.0), before(1000, 1.0, 2, wait=4.0)),  # late on this read only: not yet confirmed
    (tick(1600, 1.0, 20.0), before(1000, 1.0, 2, ago=BOOT + 1)),  # a previous tick too old to compare
    (tick(16, 1.0, 20.0), before(10, 1.0, 2)),  # nothing waiting beyond the busy slots
    (tick(1600, 0.0, 20.0), before(1000, 0.0, 2)),  # nothing busy: no completion rate to scale
])
def test_no_surge_without_the_evidence(readings, previous) -> None:
    assert surge(pool(), readings, 2, previous, NOW) is None


def steady(level: float, seconds: float = 3600.0) -> PoolHistory:
    return PoolHistory(demand=tuple((NOW - seconds + i * 15.0, level) for i in range(int(seconds / 15.0))))


def test_recommend_asks_for_the_surge_at_once_and_records_it_as_demand() -> None:
    hist = steady(2.0)
    late = tick(1600, 1.0, 20.0)
    surged = recommend(pool(), view(ready=2), late, PoolHistory(demand=hist.demand, previous=before(1000, 1.0, 2)), NOW)
    blind = recommend(pool(), view(ready=2), late, hist, NOW)  # the same tick without the previous readings
    expected = surge(pool(), late, 2, before(1000, 1.0, 2), NOW)
    assert expected is not None
    assert surged.desired == int(np.ceil(expected)) > blind.desired
    assert surged.demand_sample == pytest.approx(expected)
    assert any(r.code == "latency_surge" for r in surged.reasons)


def test_nothing_is_released_while_queued_work_is_late() -> None:
    # twenty ready machines, two hours of history at 1 machine: idle ones go, unless work is
    # late (10 busy and 40 items waiting 12 s, say on machines the load balancer favours less)
    hist = steady(1.0, seconds=7200.0)
    calm = recommend(pool(), view(ready=20), tick(80, 0.5, 0.0), hist, NOW)
    late = recommend(pool(), view(ready=20), tick(120, 0.5, 12.0), hist, NOW)
    assert calm.desired < 20
    assert late.desired == 20 and any(r.code == "latency_release_late" for r in late.reasons)


def step_replay(surging: bool = True):
    """40 min at 0.5 requests/s, then 40 min at 20/s (4 s each: 10 machines of work) through
    the real decide in the simulator; with `surging` False, the surge is switched off."""
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100, signals=QUEUE_WAIT)
    rng = np.random.default_rng(3)
    step = 2400.0
    low, high = rng.uniform(0, step, 1200), rng.uniform(step, 2 * step, 48_000)
    arrivals = np.sort(np.concatenate([low, high]))
    trace = from_arrays(arrivals, rng.exponential(4.0, len(arrivals)) + 0.01)
    # the policy sees each machine's work, so no cut-off request retried later blurs the step
    scn = dataclasses.replace(scenario(cfg, cfg.pools[0], trace, seed=3), machine_work=True,
                              policy_settings=dataclasses.replace(DEFAULT, surge=surging))
    result = run_policy(scn, "fleet")
    late = [a for a, w in zip(arrivals, result.waits, strict=True) if a >= step and w > 5.0]
    return step, late, result


def test_a_step_up_is_met_within_about_two_boots() -> None:
    step, late, result = step_replay()
    assert late and max(late) - step < 3 * BOOT  # the backlog is gone two to three boots in
    _, late_without, _ = step_replay(surging=False)
    assert max(late_without) - step > max(late) - step + BOOT  # the bounded count alone: much later
    assert len(late) < 0.7 * len(late_without)
