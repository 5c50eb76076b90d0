"""The clairvoyant lower bound against hand computations and a brute force over small traces."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from fleet.sim.engine import BILLING
from fleet.sim.oracle import lower_bound, need_steps
from fleet.sim.trace import from_arrays

PRICE = 3.6


def test_one_request_pays_boot_and_work() -> None:
    bound = lower_bound(from_arrays([0], [100]), slots=1, boot_s=180, price_hourly_usd=PRICE)
    assert bound.oracle_usd == pytest.approx(280 * PRICE / 3600)
    assert bound.work_usd == pytest.approx(100 * PRICE / 3600)
    assert bound.intervals == ((-180.0, 100.0),)


def test_gap_shorter_than_boot_keeps_the_machine() -> None:
    # busy 0..10 and 100..110: gap 90 <= boot 180: one machine from -180 to 110
    bound = lower_bound(from_arrays([0, 100], [10, 10]), slots=1, boot_s=180, price_hourly_usd=PRICE)
    assert bound.intervals == ((-180.0, 110.0),)
    assert bound.oracle_usd == pytest.approx(290 * PRICE / 3600)


def test_gap_longer_than_boot_releases_and_boots_again() -> None:
    # gap 290 > boot 180: two machines, each booted ahead of its work
    bound = lower_bound(from_arrays([0, 300], [10, 10]), slots=1, boot_s=180, price_hourly_usd=PRICE)
    assert sorted(bound.intervals) == [(-180.0, 10.0), (120.0, 310.0)]
    assert bound.oracle_usd == pytest.approx(2 * 190 * PRICE / 3600)


def test_slots_share_a_machine_and_the_minimum_bill_applies() -> None:
    # three 10 s requests at once, 4 slots: one machine; boot 30 s: lifetime 40 s billed 60 s
    bound = lower_bound(from_arrays([0, 0, 0], [10, 10, 10]), slots=4, boot_s=30, price_hourly_usd=PRICE)
    assert bound.intervals == ((-30.0, 10.0),)
    assert bound.oracle_usd == pytest.approx(BILLING.cost(40, PRICE)) == pytest.approx(60 * PRICE / 3600)
    assert bound.work_usd == pytest.approx(30 / 4 * PRICE / 3600)


def test_need_steps_counts_a_finish_before_a_start_at_the_same_instant() -> None:
    times, need = need_steps(np.array([0.0, 10.0]), np.array([10.0, 5.0]), 1)
    assert times.tolist() == [0.0, 15.0] and need.tolist() == [1, 0]


def brute_force_seconds(arrivals: list[int], services: list[int], slots: int, boot: int) -> int:
    """Per-second need on an integer grid, then per level the cheapest of every keep/release
    choice over its idle gaps (each machine is created `boot` before its first second)."""
    horizon = max(a + s for a, s in zip(arrivals, services, strict=True))
    busy = [sum(1 for a, s in zip(arrivals, services, strict=True) if a <= u < a + s) for u in range(horizon)]
    need = [math.ceil(b / slots) for b in busy]
    total = 0
    for level in range(1, max(need) + 1):
        runs: list[list[int]] = []
        for u, n in enumerate(need):
            if n >= level:
                if runs and runs[-1][1] == u:
                    runs[-1][1] = u + 1
                else:
                    runs.append([u, u + 1])
        best = None
        for keep in itertools.product((True, False), repeat=len(runs) - 1):
            cost = 0
            start = runs[0][0]
            for i, kept in enumerate(keep):
                if not kept:
                    cost += runs[i][1] - start + boot
                    start = runs[i + 1][0]
            cost += runs[-1][1] - start + boot
            best = cost if best is None else min(best, cost)
        total += best
    return total


@pytest.mark.parametrize("seed", range(25))
def test_oracle_matches_brute_force_on_small_traces(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    arrivals = sorted(rng.randrange(0, 900) for _ in range(n))
    services = [rng.randint(1, 200) for _ in range(n)]
    slots = rng.choice([1, 2, 3])
    boot = rng.choice([60, 100, 180])
    bound = lower_bound(from_arrays(arrivals, services), slots=slots, boot_s=boot, price_hourly_usd=PRICE)
    expected = brute_force_seconds(arrivals, services, slots, boot)
    assert bound.machine_s == pytest.approx(expected)
    # every lifetime is at least the boot (>= 60 s), so the bill is the seconds at the price
    assert bound.oracle_usd == pytest.approx(expected * PRICE / 3600)
    assert bound.work_usd == pytest.approx(sum(services) / slots * PRICE / 3600)
