"""The latency-aware policy: pure, from plain values; and through `decide`."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fleet.config import ConfigError, QueueWaitSignal, StaticSource
from fleet.model import Fleet, History, MachineState, PoolHistory, PoolView, SignalReading
from fleet.policy import decide
from fleet.policy.latency import LatencyDecision, excess_quantile, history_window_s, recommend
from fleet.policy.recommend import describe as signal_describe
from fleet.policy.recommend import recommend as signal_recommend
from fleet.policy.settings import DEFAULT
from fleet.sim.run import run_policy, scenario, slo_attainment
from fleet.sim.trace import from_arrays
from tests import builders
from tests.policy_helpers import NOW, make_config, view

BOOT = 180.0
HOLD_BOOTS = DEFAULT.hold_boots


def pool(**kw):
    return make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100, **kw).pools[0]


def readings(queue: float | None, util: float | None) -> tuple[SignalReading, ...]:
    return (SignalReading("queue_depth", "queue_depth", queue, "test", error=None if queue is not None else "down"),
            SignalReading("gpu_utilization", "gpu_utilization", util, "test",
                          error=None if util is not None else "no ready machine"))


def codes(decision: LatencyDecision) -> dict[str, str]:
    """The decision's reasons by code."""
    return {r.code: r.message for r in decision.reasons}


def steady(level: float, seconds: float = 3600.0, tick: float = 15.0) -> PoolHistory:
    n = int(seconds / tick)
    return PoolHistory(demand=tuple((NOW - seconds + i * tick, level) for i in range(n)))


def ending_with(hist: PoolHistory, level: float, samples: int) -> PoolHistory:
    """`hist` with its last `samples` samples at `level`."""
    return PoolHistory(demand=(*hist.demand[:-samples], *((t, level) for t, _ in hist.demand[-samples:])))


def test_demand_sample_is_work_in_machines() -> None:
    decision = recommend(pool(), view(ready=4), readings(16, 0.5), steady(2.0), NOW)
    assert isinstance(decision, LatencyDecision)
    assert decision.demand_sample == pytest.approx(2.0)  # 16 items / 8 slots
    assert decision.reasons and decision.reasons[0].code == "latency_demand"


def test_steady_demand_keeps_about_the_demand() -> None:
    decision = recommend(pool(), view(ready=6), readings(40, 40 / 48), steady(5.0), NOW)
    assert 5 <= decision.desired <= 7


def test_idle_capacity_is_released_after_the_hold() -> None:
    # demand fell from 6 to 1 more than a hold window ago: release to about 1
    hist = steady(6.0, seconds=3600.0)
    low_since = NOW - 2 * HOLD_BOOTS * BOOT - 60
    hist = PoolHistory(demand=tuple((t, 6.0 if t < low_since else 1.0) for t, _ in hist.demand))
    decision = recommend(pool(), view(ready=8), readings(8, 8 / 64), hist, NOW)
    assert decision.desired < 8
    assert decision.desired >= 1


def test_recent_need_is_held_for_a_boot_time() -> None:
    # demand was 6 for three minutes until the last read and is 1 now: nothing is released yet
    hist = ending_with(steady(1.0), 6.0, 12)
    decision = recommend(pool(), view(ready=8), readings(8, 8 / 64), hist, NOW)
    assert decision.desired >= 6


def test_no_release_without_history() -> None:
    decision = recommend(pool(), view(ready=10), readings(0, 0.0), PoolHistory(), NOW)
    assert decision.desired == 10


def test_rising_demand_scales_up_once_it_lasts() -> None:
    # a shortfall on one read only may be a burst the ready slots clear; one that lasts is real
    once = recommend(pool(), view(ready=4), readings(4 * 8 + 40, 1.0), steady(3.0), NOW)
    lasting = recommend(pool(), view(ready=4), readings(4 * 8 + 40, 1.0), ending_with(steady(3.0), 6.0, 8), NOW)
    assert once.desired < lasting.desired
    assert once.demand_sample == lasting.demand_sample


def test_a_queue_counts_at_most_a_multiple_of_the_busy_machines() -> None:
    # 10,000 queued items on 2 busy machines: not 1,250 machines
    decision = recommend(pool(), view(ready=2), readings(10_000, 1.0), ending_with(steady(2.0), 3.5, 4), NOW)
    assert decision.demand_sample is not None and decision.demand_sample <= 2 * 2 + 2
    assert 3 <= decision.desired <= 10


def test_missing_readings_hold() -> None:
    decision = recommend(pool(), view(ready=3, booting=1), readings(None, None), steady(2.0), NOW)
    assert decision.desired == 4 and decision.demand_sample is None


def test_utilization_alone_gives_busy_machines() -> None:
    decision = recommend(pool(), view(ready=4), readings(None, 0.5), steady(2.0), NOW)
    assert decision.demand_sample == pytest.approx(2.0)


def test_headroom_follows_recorded_rises() -> None:
    # the history shows demand jumping by 6 machines every 10 minutes: more headroom than flat history
    tick = 15.0
    bursty = PoolHistory(demand=tuple((NOW - 3600 + i * tick, 8.0 if (i % 40) < 8 else 2.0) for i in range(240)))
    flat = steady(2.0)
    r = readings(16, 0.5)
    assert recommend(pool(), view(ready=4), r, bursty, NOW).desired > recommend(pool(), view(ready=4), r, flat, NOW).desired


def test_excess_quantile_by_hand() -> None:
    import numpy as np

    values = np.array([1.0, 1.0, 1.0, 5.0, 1.0, 1.0])
    # hold over 1 sample, ahead 2: excesses at i=0..3: max(v[1..2])-v0=0, max(v[2..3])-v1=4, 4, 0;
    # the quantile is taken over the rises that happened (a sparse trace's idle windows do not
    # dilute them)
    assert excess_quantile(values, 1, 2, 1.0) == pytest.approx(4.0)
    assert excess_quantile(values, 1, 2, 0.0) == pytest.approx(4.0)
    # hold over 2 samples: excesses at i=1..3: max(v[2..3]) - max(v[0..1]) = 4,
    # max(v[3..4]) - max(v[1..2]) = 4, max(v[4..5]) - max(v[2..3]) = -4
    assert excess_quantile(values, 2, 2, 0.5) == pytest.approx(4.0)
    assert excess_quantile(np.array([3.0, 2.0, 1.0, 0.0]), 1, 2, 1.0) == 0.0  # only falls
    assert excess_quantile(values[:2], 1, 2, 1.0) == 0.0


def test_history_window_is_at_least_an_hour() -> None:
    assert history_window_s(pool()) >= 3600


def test_decide_uses_the_latency_policy_and_applies_hard_limits() -> None:
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=5)
    p = cfg.pools[0]
    fleet = Fleet({"p": view(ready=2)})
    hist = ending_with(steady(2.0), 12.0, 12)  # demand has been 12 machines for three minutes
    plan = decide(cfg, fleet, {"p": readings(400, 1.0)}, History({"p": hist}), NOW)
    pool_plan = plan.pool("p")
    assert pool_plan.desired == 5  # the policy wants more; max=5 caps it
    assert any(r.code == "latency_demand" for r in pool_plan.reasons)
    assert pool_plan.demand_sample is not None and pool_plan.demand_sample > 2
    assert p.latency_budget_s == 5


def test_decide_never_scales_down_on_a_missing_signal() -> None:
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=20)
    fleet = Fleet({"p": view(ready=10)})
    plan = decide(cfg, fleet, {"p": readings(0, None)}, History({"p": steady(0.0)}), NOW)
    assert plan.pool("p").desired == 10
    assert not math.isnan(plan.pool("p").demand_sample or 0.0)


def test_release_takes_only_idle_machines_ready_for_a_hold_window() -> None:
    from fleet.model import Machine, MachineState, PoolView

    def ready(i: int, ready_at: float, work: float = 0.0) -> Machine:
        return Machine(id=f"m{i}", pool="p", state=MachineState.READY, size="gpu-h100x1-80gb", region="sim1",
                       price_hourly_usd=3.0, created_at=ready_at - BOOT, ready_at=ready_at, work_left=work)

    # 6 ready: 2 idle for long, 2 idle but ready only a minute ago, 2 busy; demand says ~1 machine
    machines = (ready(0, NOW - 3000), ready(1, NOW - 3000), ready(2, NOW - 60), ready(3, NOW - 60),
                ready(4, NOW - 3000, work=1), ready(5, NOW - 3000, work=1))
    pool_view = PoolView(name="p", machines=machines, launch_price_hourly_usd=3.0)
    decision = recommend(pool(), pool_view, readings(2, 2 / 48), steady(0.25), NOW)
    assert decision.desired == 4  # only the two long-idle machines go
    assert "latency_release_idle" in codes(decision)


def test_a_pool_that_drains_releases_busy_machines_ready_for_a_hold_window_too() -> None:
    # behind a load balancer every machine is busy: without a drain nothing could go
    from fleet.model import Machine, MachineState, PoolView

    machines = tuple(Machine(id=f"m{i}", pool="p", state=MachineState.READY, size="gpu-h100x1-80gb",
                             region="sim1", price_hourly_usd=3.0, created_at=NOW - 3000 - BOOT,
                             ready_at=NOW - 3000, work_left=1.0) for i in range(6))
    pool_view = PoolView(name="p", machines=machines, launch_price_hourly_usd=3.0)
    work = {"url": "http://p", "preset": "vllm"}
    keeps = recommend(pool(machine_work=work), pool_view, readings(6, 6 / 48), steady(0.75), NOW)
    drains = recommend(pool(machine_work={**work, "drain_timeout_s": 300}), pool_view, readings(6, 6 / 48),
                       steady(0.75), NOW)
    assert keeps.desired == 6 and "0 machine(s) idle and ready" in codes(keeps)["latency_release_idle"]
    assert drains.desired < 6


def test_a_latency_pool_releases_idle_ready_machines_and_keeps_booting_ones() -> None:
    # 6 ready (r0 idle, r1..r5 busy), 2 booting, demand ~0.25: the idle ready machine goes,
    # the boots already paid for are kept (a plain pool would remove booting machines first)
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100)
    plan = decide(cfg, Fleet({"p": view(ready=6, booting=2)}), {"p": readings(2, 2 / 48)},
                  History({"p": steady(0.25)}), NOW).pool("p")
    assert plan.desired == 7
    destroyed = [i for a in plan.actions for i in getattr(a, "machine_ids", ())]
    assert destroyed == ["r0"]


def test_keep_booting_victims_are_idle_ready_first_longest_ready_first() -> None:
    from fleet.model import Machine, MachineState
    from fleet.policy.removal import choose_victims

    def m(i: str, state: MachineState, created: float, work: float = 0.0) -> Machine:
        return Machine(id=i, pool="p", state=state, size="gpu-h100x1-80gb", region="sim1", price_hourly_usd=3.0,
                       created_at=created, ready_at=created + BOOT if state is MachineState.READY else None,
                       work_left=work)

    fleet_machines = (m("new", MachineState.READY, NOW - 400), m("old", MachineState.READY, NOW - 4000),
                      m("busy", MachineState.READY, NOW - 5000, work=3), m("boot", MachineState.BOOTING, NOW - 10))
    ids = [v.id for v in choose_victims(fleet_machines, 4, keep_booting=True)]
    assert ids == ["old", "new", "busy", "boot"]
    assert [v.id for v in choose_victims(fleet_machines, 1)] == ["boot"]  # the default order is unchanged


def surging_history() -> PoolHistory:
    """Demand idles at 1 machine with 10-minute surges to 6 every half hour (rise headroom ~5),
    the last five minutes at 1."""
    hist = PoolHistory(demand=tuple((t, 6.0 if (t // 600) % 3 == 0 else 1.0) for t, _ in steady(1.0).demand))
    return ending_with(hist, 1.0, 20)


def test_rise_headroom_is_added_to_the_hold_not_to_a_momentary_running_peak() -> None:
    # 6 machines of work running and 2 more queued that will not clear in time (no queue_wait):
    # the running work asks for itself + its noise (8), not running + the rises (11)
    decision = recommend(pool(), view(ready=6), readings(64, 1.0), surging_history(), NOW)
    assert decision.headroom >= 4.0  # the recorded surges
    assert decision.desired == math.ceil(6.0 + 1.5 * math.sqrt(6 * 8) / 8)


def test_a_running_peak_with_nothing_late_buys_nothing() -> None:
    # the same 6 machines of work fill the 6 ready ones, but nothing waits: a moment's peak is
    # covered by hold + headroom (6), and buying for it would flap the target tick to tick
    decision = recommend(pool(), view(ready=6), readings(48, 1.0), surging_history(), NOW)
    assert decision.desired == math.ceil(decision.hold + decision.headroom - 1e-9) == 6
    # queued work the queue_wait reading shows clearing within the budget is not late either
    clearing = (*readings(56, 1.0), SignalReading("queue_wait", "queue_wait", 1.0, "test"))
    assert recommend(pool(), view(ready=6), clearing, surging_history(), NOW).desired == 6
    # queued work waiting past the budget's slack is late: running work counts again
    late = (*readings(56, 1.0), SignalReading("queue_wait", "queue_wait", 4.0, "test"))
    assert recommend(pool(), view(ready=6), late, surging_history(), NOW).desired == 8


def test_a_steady_pool_does_not_flap_on_one_read() -> None:
    # steady 8 machines of work on 10 ready: one read with every slot busy and nothing waiting
    # does not raise the target, so the next ordinary read has nothing to release
    hist = steady(8.0)
    calm = recommend(pool(), view(ready=10), readings(64, 0.8), hist, NOW)
    peak = recommend(pool(), view(ready=10), readings(80, 1.0), hist, NOW)
    assert peak.desired == calm.desired <= 10


# ---------------------------------------------------------------- queue-wait feedback


def with_wait(queue: float, util: float, wait: float | None) -> tuple[SignalReading, ...]:
    if wait is None:
        return readings(queue, util)
    return (*readings(queue, util), SignalReading("queue_wait", "queue_wait", wait, "test"))


def test_queue_wait_signal_config_model() -> None:
    cfg = make_config(latency_budget_s=5, signals=[{"kind": "queue_wait", "name": "vllm-wait",
                                                   "source": {"type": "static", "value": 0.4}}])
    signal = cfg.pools[0].signals[0]
    assert isinstance(signal, QueueWaitSignal)
    assert signal.name == "vllm-wait" and isinstance(signal.source, StaticSource) and signal.source.value == 0.4
    reading = SignalReading("vllm-wait", "queue_wait", 0.4, "test")
    assert signal_recommend(signal, reading, ready=3) is None  # no machine count for target tracking
    assert signal_describe(signal).format(v=0.4) == "queue wait 0.4s"
    with pytest.raises(ConfigError):  # strict like every signal model
        make_config(signals=[{"kind": "queue_wait", "target": 1, "source": {"type": "static", "value": 0}}])


# 2 ready machines of 8 slots, all 16 busy (util 1.0); budget 5 s, so the queue clears while
# the work started last tick waited at most 2.5 s
@pytest.mark.parametrize(
    ("queue", "wait", "expected_demand"),
    [
        (24, None, 3.0),  # no queue_wait reading: as before, 8 queued = 1 machine of demand
        (24, 0.0, 3.0),  # work queued but nothing started last tick: maybe a stall, no evidence
        (24, 1.0, 2.0),  # queued work starts within half the budget: only running work counts
        (24, 2.5, 2.0),  # exactly half the budget still clears
        (24, 2.6, 3.0),  # past half the budget: the queue counts again
        (24, 30.0, 3.0),  # far past the budget
        (16, 1.0, 2.0),  # nothing queued: the wait changes nothing
        (16, 0.0, 2.0),
    ],
)
def test_queue_wait_leaves_out_queued_work_that_clears_within_the_budget(queue, wait, expected_demand) -> None:
    decision = recommend(pool(), view(ready=2), with_wait(queue, 1.0, wait), steady(2.0), NOW)
    assert decision.demand_sample == pytest.approx(expected_demand)
    assert ("latency_queue_clears" in codes(decision)) == (expected_demand < queue / 8)


def test_queue_wait_lowers_the_target_only_when_the_queue_clears() -> None:
    # a queue of 8 items for the last 5 minutes; the history is what each policy recorded
    # during it: the queue counted (3 machines), or left out while it cleared (2)
    recorded_counted = ending_with(steady(2.0), 3.0, 20)
    counted = recommend(pool(), view(ready=2), with_wait(24, 1.0, 30.0), recorded_counted, NOW)
    without = recommend(pool(), view(ready=2), readings(24, 1.0), recorded_counted, NOW)
    assert counted == without  # a wait past the budget: exactly the signal-less decision
    cleared = recommend(pool(), view(ready=2), with_wait(24, 1.0, 1.0), steady(2.0), NOW)
    assert cleared.desired < counted.desired
    assert cleared.desired >= 2  # running work keeps its machines


def test_a_steady_stream_keeps_a_steady_fleet_in_replay() -> None:
    # An hour of Poisson traffic holding 8 machines x 8 slots (3 s requests), through the real
    # decide in the simulator: once the pool has its history, the second half hour needs few new
    # machines (0-5 over seeds 0-19; 2 with seed 0).  Before running work counted only while late,
    # the target flapped on single reads and the same replays bought 11-15 machines in the second
    # half (seeds 0-4), each a boot paid for nothing.
    cfg = builders.make_config(
        builders.pool("llm", max=100, boot_seconds=180, latency_budget_s=5, slots_per_machine=8,
                      signals=[builders.queue_wait()]),
        fleet={"name": "steady", "tick_seconds": 15})
    rng = np.random.default_rng(0)
    n = int(8 * 8 / 3.0 * 3600)
    trace = from_arrays(np.sort(rng.uniform(0, 3600, n)), rng.exponential(3.0, n))
    scn = scenario(cfg, cfg.pools[0], trace, seed=0)
    result = run_policy(scn, "fleet")
    assert slo_attainment(scn, result) >= 0.999
    assert sum(1 for created in result.created if created >= 1800) <= 6


def test_an_idle_pool_whose_queue_wait_is_missing_still_scales_down() -> None:
    # vLLM's and Triton's queue-wait presets read as missing when no request started lately: that
    # is an idle pool, not a blind one; a missing queue_depth still holds the pool
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100, signals=[
        {"kind": "queue_depth", "source": {"type": "static", "value": 0}},
        {"kind": "queue_wait", "source": {"type": "static", "value": 0}}])
    idle = steady(0.0, seconds=7200.0)
    no_wait = SignalReading("w", "queue_wait", None, "test", error="no request started in the window")

    def plan(queue: float | None):
        queue_reading = SignalReading("q", "queue_depth", queue, "test", error=None if queue is not None else "down")
        return decide(cfg, Fleet(pools={"p": view(ready=8)}), {"p": (queue_reading, no_wait)},
                      History(pools={"p": idle}), NOW).pool("p")

    assert plan(0.0).desired < 8
    assert plan(None).desired == 8


def test_blind_victims_are_the_newest_of_those_ready_a_hold_window() -> None:
    # without per-machine work a machine's work started after it came up: the newest settled one
    # has the least to lose; one ready for less than the hold was just bought and goes last
    from fleet.model import Machine, MachineState
    from fleet.policy.removal import choose_victims

    def m(i: str, state: MachineState, ready_at: float | None) -> Machine:
        return Machine(id=i, pool="p", state=state, size="gpu-h100x1-80gb", region="sim1", price_hourly_usd=3.0,
                       created_at=(ready_at or NOW) - BOOT, ready_at=ready_at)

    fleet_machines = (m("oldest", MachineState.READY, NOW - 5000), m("settled", MachineState.READY, NOW - 1000),
                      m("fresh", MachineState.READY, NOW - 60), m("boot", MachineState.BOOTING, None))
    settled_before = NOW - HOLD_BOOTS * BOOT
    ids = [v.id for v in choose_victims(fleet_machines, 4, keep_booting=True, work_seen=False,
                                        settled_before=settled_before)]
    assert ids == ["settled", "oldest", "fresh", "boot"]
    # seeing the work (all idle here), the longest ready goes first, as before
    assert [v.id for v in choose_victims(fleet_machines, 1, keep_booting=True)] == ["oldest"]


def test_a_release_leaves_the_running_work_and_its_noise_ready() -> None:
    # 10 ready machines, all idle by their own readings, 2 booting; two hours of history at 6
    # would release some, but a release leaves ready the work running now plus its noise
    hist = steady(6.0, seconds=7200.0)
    base = view(ready=10, booting=2)
    vw = PoolView(name=base.name, launch_price_hourly_usd=base.launch_price_hourly_usd, machines=tuple(
        replace(x, ready_at=NOW - 3600, work_left=0.0) if x.state is MachineState.READY else x
        for x in base.machines))

    def kept_ready(util: float) -> int:
        decision = recommend(pool(), vw, readings(80 * util, util), hist, NOW)
        assert "latency_release_idle" in codes(decision)  # the history alone would release more
        return 10 - (12 - decision.desired)

    assert kept_ready(0.8) == 10  # 8 machines of work running + noise 1.3 (the hold's): 10 stay ready
    message = codes(recommend(pool(), vw, readings(64, 0.8), hist, NOW))["latency_release_idle"]
    assert "10 kept ready for the work running and its noise: releasing only 0" in message
    assert kept_ready(0.5) < 10  # 5 running: the history's release goes ahead
    assert kept_ready(0.5) >= math.ceil(5 + 1.5 * math.sqrt(6 * 8) / 8)


def test_the_settings_reach_the_latency_policy_through_decide() -> None:
    # the constants are a frozen value passed in, not module state: no staffing noise, no headroom
    cfg = make_config(latency_budget_s=5, slots_per_machine=8, boot_seconds=BOOT, max=100)
    args = (cfg, Fleet({"p": view(ready=6)}), {"p": readings(40, 40 / 48)}, History({"p": steady(5.0)}), NOW)
    shipped = decide(*args).pool("p")
    assert decide(*args, settings=DEFAULT).pool("p") == shipped
    bare = decide(*args, settings=replace(DEFAULT, beta=0.0)).pool("p")
    assert bare.desired == 5 < shipped.desired
    with pytest.raises(AttributeError):
        DEFAULT.beta = 0.0  # type: ignore[misc]
