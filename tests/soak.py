"""The fault soak: two replicas ticking one pool on one database and one simulated cloud, with
every fault of tests/fault_cloud.py mixed in, demand changes, wall-clock steps and restarts,
all drawn from one seed; the invariants are checked against the cloud's truth after every tick.

    no machine without a row, and no row without a machine (after a quiet settling period)
    no token with more machines than it asked for
    machines never above the pool's max, burn never above its cap
    no lost spend: the ledger holds what ran (within one accrual and one minimum charge each)

`run_soak` is shared by tests/test_soak.py (a short one, in CI) and bench/soak.py (thousands).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.fault_cloud import FaultRates, FaultyCloud, Truth
from tests.tick_helpers import Rig, make_rig

PRICE = 3.39
CAP = 20.0  # the pool's max_hourly_usd: 5 machines
MAX = 10
MIX = FaultRates(slow=0.03, lost=0.04, storm=0.04, lag=0.2, forget=0.05)


@dataclass
class SoakResult:
    ticks: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # ticks that raised, by exception type
    injected: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    restarts: int = 0
    violations: list[str] = field(default_factory=list)
    machines_made: int = 0
    spend_usd: float = 0.0
    ran_usd: float = 0.0


class _Soak:
    def __init__(self, rig: Rig, seed: int, rates: FaultRates, steps: bool, restarts: bool):
        self.rig, self.rng, self.rates = rig, random.Random(seed), rates
        self.steps, self.restarts = steps, restarts
        self.truth = Truth()
        self.result = SoakResult()
        self.replicas = {name: self._start(name, seed + i) for i, name in enumerate(("a", "b"))}

    def _start(self, holder: str, seed: int):
        box: dict[str, object] = {}

        def beat() -> None:  # a live replica's heartbeat runs while its call is slow
            ctl = box.get("ctl")
            keeper = getattr(ctl, "keeper", None)
            if keeper is not None and keeper.running:  # it beats while the replica acts
                keeper.wait_for_beat(timeout_s=5)

        cloud = FaultyCloud(self.rig.cloud, self.rig.clock, self.rates, self.truth, seed, on_time_passing=beat)
        ctl = self.rig.controller(holder=holder, providers={"simulated": cloud}, renew_every_s=0.005)
        box["ctl"] = ctl
        return ctl

    def tick(self, i: int, faults: bool) -> None:
        rng, rig = self.rng, self.rig
        if rng.random() < 0.1:
            rig.set(queue=rng.choice([0, 4, 8, 12, 16, 24, 40, 80]))
        if faults and self.steps and rng.random() < 0.01:
            rig.clock.step(rng.choice([-86_400.0, -3600.0, 3600.0, 86_400.0]))
            self.result.steps += 1
        if faults and self.restarts and rng.random() < 0.02:
            name = rng.choice(sorted(self.replicas))
            self.replicas[name] = self._start(name, rng.randrange(1 << 30))
            self.result.restarts += 1
        rig.clock.advance(15)
        for name in rng.sample(sorted(self.replicas), 2):
            try:
                self.replicas[name].tick()
            except Exception as exc:  # a tick may fail under faults; the invariants must hold anyway
                self.result.errors[type(exc).__name__] += 1
        self.result.ticks += 1
        self._check(i)

    def _check(self, i: int) -> None:
        live = [m for m in self.rig.cloud.all_machines() if m.pool == "imagegen"]
        if len(live) > MAX:
            self.result.violations.append(f"tick {i}: {len(live)} machines > max {MAX}")
        burn = sum(m.price_hourly_usd or 0.0 for m in live)
        if burn > CAP + 1e-6:
            self.result.violations.append(f"tick {i}: burn ${burn:.2f}/h > cap ${CAP:g}/h ({len(live)} machines)")
        for token, made in self.truth.made_per_token().items():
            if made > self.truth.asked.get(token, 0):
                self.result.violations.append(f"tick {i}: token {token} has {made} machines, asked "
                                              f"{self.truth.asked.get(token, 0)}")

    def settle(self) -> None:
        """Quiet ticks, then: the database believes exactly what exists, and the ledger holds what ran."""
        self.truth.quiet = True
        for i in range(12):
            self.tick(self.result.ticks + i, faults=False)
        store = self.replicas["a"].store
        rows = {m.provider_id for m in store.unfinished_machines()}
        live = {m.id for m in self.rig.cloud.all_machines()}
        if rows != live:
            self.result.violations.append(f"settled: rows without machines {sorted(rows - live)}, "
                                          f"machines without rows {sorted(live - rows)}")
        self._check_spend(store)

    def _check_spend(self, store) -> None:
        now = self.rig.clock.mono
        ran_s = {i: self.truth.died.get(i, now) - born for i, born in self.truth.born.items()}
        ran = sum(ran_s.values()) * PRICE / 3600
        spent = float(sum(store.spend_since(0.0).values()))
        slack = len(ran_s) * 2 * 60 * PRICE / 3600  # one accrual behind, one minimum charge ahead, each
        self.result.machines_made, self.result.ran_usd, self.result.spend_usd = len(ran_s), ran, spent
        if not ran - slack <= spent <= ran + slack:
            self.result.violations.append(f"spend ${spent:.4f} for ${ran:.4f} that ran (slack ${slack:.4f})")


def run_soak(database_url: str, tmp_path: Path, ticks: int, seed: int, rates: FaultRates = MIX,
             steps: bool = True, restarts: bool = True) -> SoakResult:
    rig = make_rig(database_url, tmp_path, scale_up_cooldown_s=0, scale_down_cooldown_s=60,
                   scale_down_stabilization_s=60, max=MAX, max_hourly_usd=CAP, budget=100.0)
    soak = _Soak(rig, seed, rates, steps, restarts)
    for i in range(ticks):
        soak.tick(i, faults=True)
    soak.settle()
    soak.result.injected = soak.truth.injected
    return soak.result
