"""The simulator against hand-computed cases, and its billing against the simulated cloud's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from fleet.sim.engine import BILLING, Engine, EngineSettings, Snapshot, run
from fleet.sim.policies import StaticPolicy, readings_for
from fleet.sim.trace import from_arrays
from providers.base import InstanceStatus, LaunchSpec, PoolTarget
from providers.simulated import SimulatedCloud
from tests.builders import UNSET, make_config, pool, queue_wait

PRICE = 3.6  # $/h: one cent per 10 s


def settings(**kw) -> EngineSettings:
    base = dict(slots=1, boot_s=100.0, price_hourly_usd=PRICE)
    return EngineSettings(**{**base, **kw})


@dataclass
class Script:
    """Creates or destroys at given ticks; records what the signals showed."""

    plan: dict[float, int]  # tick time -> machines to create (negative: destroy that many idle/any)
    tick_s: float = 10.0
    name: str = "script"
    seen: list[Snapshot] = field(default_factory=list)

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:
        self.seen.append(seen)
        n = self.plan.get(now, 0)
        if n > 0:
            engine.create(n)
        elif n < 0:
            engine.destroy(list(engine.alive)[: -n])


@dataclass
class OnTicks:
    """Calls `actions[t](engine)` at tick t; records what the signals showed."""

    actions: dict[float, Callable[[Engine], object]]
    tick_s: float = 10.0
    name: str = "script"
    seen: list[Snapshot] = field(default_factory=list)

    def tick(self, now: float, engine: Engine, seen: Snapshot) -> None:
        self.seen.append(seen)
        if now in self.actions:
            self.actions[now](engine)


def test_single_burst_on_a_static_fleet() -> None:
    # 4 requests of 10 s at t=0 on one machine with 2 slots: two start at once, two wait 10 s
    trace = from_arrays([0, 0, 0, 0], [10, 10, 10, 10])
    result = run(trace, settings(slots=2, initial_ready=1), StaticPolicy(1))
    assert result.waits.tolist() == [0, 0, 10, 10]
    assert result.end_s == 20
    assert result.cost_usd == pytest.approx(BILLING.cost(20, PRICE))  # the 60 s minimum applies
    assert result.cost_usd == pytest.approx(60 * PRICE / 3600)


def test_steady_stream_never_waits() -> None:
    # one request every 10 s holding 5 s: one slot serves all at once
    arrivals = [10.0 * i for i in range(100)]
    result = run(from_arrays(arrivals, [5.0] * 100), settings(initial_ready=1), StaticPolicy(1))
    assert result.waits.max() == 0
    assert result.end_s == 995
    assert result.cost_usd == pytest.approx(995 * PRICE / 3600)


def test_fifo_order_and_packing_on_the_oldest_machine() -> None:
    trace = from_arrays([0, 1, 2, 3], [100, 1, 1, 1])
    engine_result = run(trace, settings(slots=2, initial_ready=2), StaticPolicy(2))
    # request 0 on machine 0, request 1 on machine 0's second slot, 2 and 3 on machine 0 once freed
    assert engine_result.waits.tolist() == [0, 0, 0, 0]


def test_arrival_before_any_machine_waits_for_the_boot() -> None:
    # no machine at first; the controller creates one at t=0, ready at 100
    trace = from_arrays([5, 150], [20, 20])
    script = Script({0.0: 1})
    result = run(trace, settings(), script)
    assert result.waits.tolist() == [95, 0]  # starts at 100; the second finds the machine ready
    assert result.created == [0.0]
    assert result.gone == [170.0]  # alive until the run ends: the last request finishes at 170
    assert result.cost_usd == pytest.approx(170 * PRICE / 3600)


def test_gap_longer_than_boot_with_destroy_and_recreate() -> None:
    # requests at 0 and 400 (gap 390 s > boot 100 s): destroying at 20 and creating at 300 costs
    # two lifetimes; the second request waits for nothing because the machine is ready at 400
    trace = from_arrays([0, 400], [10, 10])
    script = Script({20.0: -1, 300.0: 1})
    result = run(trace, settings(initial_ready=1), script)
    assert result.waits.tolist() == [0, 0]
    assert result.created == [0.0, 300.0]
    assert result.gone == [20.0, 410.0]
    assert result.cost_usd == pytest.approx(BILLING.cost(20, PRICE) + BILLING.cost(110, PRICE))
    assert BILLING.cost(20, PRICE) == pytest.approx(60 * PRICE / 3600)  # 60 s minimum


def test_gap_shorter_than_boot_keeping_beats_releasing() -> None:
    # requests at 0 and 60 (gap 50 s < boot 100 s).  Kept: no wait, one machine billed 70 s.
    # Released at 20 and re-created at 30: ready at 130, the second request waits 70 s, and
    # the bill is the 60 s minimum plus 30..140.
    trace = from_arrays([0, 60], [10, 10])
    kept = run(trace, settings(initial_ready=1), Script({}))
    assert kept.waits.tolist() == [0, 0]
    assert kept.cost_usd == pytest.approx(70 * PRICE / 3600)
    churn = run(trace, settings(initial_ready=1), Script({20.0: -1, 30.0: 1}))
    assert churn.waits.tolist() == [0, 70]
    assert churn.gone == [20.0, 140.0]
    assert churn.cost_usd == pytest.approx((60 + 110) * PRICE / 3600)


def test_draining_machine_finishes_its_work_then_goes() -> None:
    trace = from_arrays([0], [50])
    script = Script({10.0: -1})
    result = run(trace, settings(initial_ready=1), script)
    assert result.waits.tolist() == [0]
    assert result.gone == [50.0]  # destroyed at 10 while busy: drained, gone when its request ended


def test_a_draining_machine_taken_back_serves_the_queue_again() -> None:
    # one machine, 1 slot: a request at 0 holds it 50 s; it is drained at 10 and taken back at 20,
    # so the request arriving at 30 waits for the first (there is no other machine to boot)
    script = OnTicks({10.0: lambda e: e.destroy([0]), 20.0: lambda e: e.undrain([0])})
    result = run(from_arrays([0, 30], [50, 10]), settings(initial_ready=1), script)
    assert result.waits.tolist() == [0, 20]
    assert result.gone == [60.0]  # at the end of the run, not at 50 when its drain would have ended


def cut_at(at: float, machines: list[int]) -> OnTicks:
    return OnTicks({at: lambda e: e.cut(machines)})


def test_a_cut_machine_goes_at_once_and_its_request_is_retried_from_scratch() -> None:
    # two ready machines, 1 slot: requests at 0 and 1 hold them 100 s each (oldest machine first);
    # machine 0 is cut at 10: billed to 10, its request retried behind the queue, served again
    # in full when machine 1 frees at 101 (wait 101 s from its arrival, 91 s from its retry)
    script = cut_at(10.0, [0])
    result = run(from_arrays([0, 1], [100, 100]), settings(initial_ready=2), script)
    assert result.gone == [10.0, 201.0]
    assert result.waits.tolist() == [101.0, 0.0]
    assert result.cut_requests == [0]
    assert result.end_s == 201.0  # the stale completion at 100 ended nothing
    assert max(s.wait_max for s in script.seen) == pytest.approx(91.0)  # the server sees the retry


def test_a_cut_request_starts_at_once_on_a_free_slot() -> None:
    # 2 slots on machine 1: the request cut from machine 0 moves there the same instant
    script = cut_at(10.0, [0])
    result = run(from_arrays([0, 1], [100, 100]), settings(slots=2, initial_ready=2), script)
    # oldest machine first: both requests went to machine 0; both are retried on machine 1 at 10
    assert result.waits.tolist() == [10.0, 9.0]
    assert sorted(result.cut_requests) == [0, 1]
    assert result.gone[0] == 10.0 and result.end_s == 110.0  # 100 s from scratch


def test_a_draining_machine_cut_stops_at_once() -> None:
    # drained at 10 (still serving), then cut at 20 (a drain timeout): the request is retried
    script = OnTicks({10.0: lambda e: e.destroy([0]), 20.0: lambda e: (e.cut([0]), e.create(1))})
    result = run(from_arrays([0], [50]), settings(initial_ready=1), script)
    assert result.gone[0] == 20.0
    assert result.waits.tolist() == [120.0]  # the new machine is ready at 120; served again from there
    assert result.cut_requests == [0]


def test_signal_lag_reads_the_queue_as_it_was() -> None:
    # requests at 0..4 holding 100 s, 1 slot, one machine: at t=10 the queue is 4 waiting + 1 busy;
    # with lag 10 s the reading at t=10 shows t=0 after the first arrival is processed
    trace = from_arrays([0, 1, 2, 3, 4], [100] * 5)
    lagged = Script({}, tick_s=10.0)
    run(trace, settings(initial_ready=1, lag_s=10.0), lagged)
    fresh = Script({}, tick_s=10.0)
    run(trace, settings(initial_ready=1), fresh)
    assert (fresh.seen[1].waiting, fresh.seen[1].busy) == (4, 1)
    assert (lagged.seen[1].waiting, lagged.seen[1].busy) == (0, 1)
    assert lagged.seen[2].waiting == 4 and lagged.seen[2].at == 10.0


def test_boot_jitter_is_seeded_and_bounded() -> None:
    trace = from_arrays([0], [1])
    engine = Engine(trace, settings(boot_jitter_s=30.0, seed=3))
    engine.create(50)
    boots = [r - c for c, r in zip(engine.created, engine.ready_at, strict=True)]
    assert min(boots) >= 70 and max(boots) <= 130 and len(set(boots)) > 10
    again = Engine(trace, settings(boot_jitter_s=30.0, seed=3))
    again.create(50)
    assert again.ready_at == engine.ready_at


def test_quota_launches_only_what_it_admits_and_counts_the_violation() -> None:
    engine = Engine(from_arrays([0], [1]), settings(quota=3))
    assert engine.create(5) == 3
    assert engine.live_count() == 3 and engine.violations == 1


def test_billing_and_states_match_the_simulated_cloud() -> None:
    """Replay a run's machine lifetimes through SimulatedCloud on the same virtual clock: the
    cloud reports the same booting/ready states, and its billing rule bills the same lifetimes."""
    trace = from_arrays([5, 150, 151, 152, 700], [20, 400, 30, 30, 5])
    script = Script({0.0: 1, 160.0: 2, 300.0: -1, 600.0: 1})
    result = run(trace, settings(boot_jitter_s=0.0), script)
    assert SimulatedCloud.billing == BILLING
    now = [0.0]
    cloud = SimulatedCloud(clock=lambda: now[0])
    target = PoolTarget(fleet="sim", pool="p", sizes=("gpu-h100x1-80gb",), options={"boot_seconds": 100.0})
    events = sorted([(c, "create", i) for i, c in enumerate(result.created)]
                    + [(g, "destroy", i) for i, g in enumerate(result.gone)], key=lambda e: (e[0], e[1] == "create"))
    ids: dict[int, str] = {}
    lifetimes: dict[str, list[float]] = {}
    for t, kind, i in events:
        now[0] = t
        if kind == "create":
            made = cloud.create(LaunchSpec(target=target, count=1, token=f"m{i}"))
            ids[i] = made.instances[0].id
            lifetimes[ids[i]] = [t]
        else:
            cloud.destroy([ids[i]])
            lifetimes[ids[i]].append(t)
        # every live machine's state agrees with the engine's boot rule at this instant
        for inst in cloud.list_instances("sim"):
            i_sim = next(k for k, v in ids.items() if v == inst.id)
            ready = t >= result.created[i_sim] + 100.0
            assert inst.status is (InstanceStatus.READY if ready else InstanceStatus.BOOTING)
    cloud_bill = sum(cloud.billing.cost(end - start, cloud.price("gpu-h100x1-80gb")) for start, end in lifetimes.values())
    sim_bill = sum(BILLING.cost(g - c, cloud.price("gpu-h100x1-80gb"))
                   for c, g in zip(result.created, result.gone, strict=True))
    assert len(result.created) == 4
    assert cloud_bill == pytest.approx(sim_bill)
    assert result.cost_usd == pytest.approx(sum(BILLING.cost(g - c, PRICE)
                                                 for c, g in zip(result.created, result.gone, strict=True)))
    assert math.isfinite(result.waits.max())


def test_queue_wait_reading_is_the_longest_wait_started_since_the_last_read() -> None:
    # 1 slot, requests at 0, 1, 2 holding 10 s: they start at 0, 10, 20 having waited 0, 9, 18;
    # reads at 0, 10, 20 each see the starts since the previous read
    trace = from_arrays([0, 1, 2], [10, 10, 10])
    fresh = Script({}, tick_s=10.0)
    run(trace, settings(initial_ready=1), fresh)
    assert [s.wait_max for s in fresh.seen] == [0.0, 9.0, 18.0]
    # lagged 5 s: the reads at -5, 5, 15 (the start at 10 is in the read at 15)
    lagged = Script({}, tick_s=10.0)
    run(trace, settings(initial_ready=1, lag_s=5.0), lagged)
    assert [(s.at, s.wait_max) for s in lagged.seen] == [(-5.0, 0.0), (5.0, 0.0), (15.0, 9.0)]


def test_queue_wait_reading_reaches_the_policy_only_when_configured() -> None:
    seen = Snapshot(at=10.0, waiting=3, busy=1, ready=1, wait_max=2.5)
    (plain,) = make_config(pool(max=4, latency_budget_s=5, signals=UNSET)).pools
    assert "queue_wait" not in {r.kind for r in readings_for(plain, seen)}
    (waits,) = make_config(pool(max=4, latency_budget_s=5, signals=[queue_wait()])).pools
    by_kind = {r.kind: r.value for r in readings_for(waits, seen)}
    assert by_kind == {"queue_wait": 2.5, "queue_depth": 4.0, "gpu_utilization": 1.0}
