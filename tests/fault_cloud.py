"""A fault-injecting provider for the fault tests and the soak.  It wraps a provider and, drawn
from a seeded random stream, makes a call slow before or after its effect (the virtual clock
moves, in steps, `on_time_passing` called after each: a live replica's lease heartbeat), loses
an answer after the effect (the client sees an error, the machines exist), fails a call before
any effect (a 5xx storm), and makes the listing lag (new machines show up late) or forget
(a known machine drops out for a while).  Every replica gets its own wrapper over one cloud and
one `Truth`: what the cloud really did, which the invariants are checked against."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import DestroyFailure, LaunchResult, LaunchSpec, ProviderInstance, TransientError

_STEP_S = 10.0  # a slow call's time passes in steps this long


@dataclass
class FaultRates:
    slow: float = 0.0  # a call takes up to `slow_s` of virtual time (before or after its effect)
    slow_s: float = 90.0
    lost: float = 0.0  # the effect happens, the answer is lost (TransientError)
    storm: float = 0.0  # the call fails before any effect (TransientError)
    lag: float = 0.0  # a new machine is hidden from the listing for up to `lag_s`
    lag_s: float = 45.0
    forget: float = 0.0  # a listing leaves out a known machine, for up to `forget_s`
    forget_s: float = 45.0


@dataclass
class Truth:
    """What the cloud really did, on the monotonic clock."""

    asked: dict[str, int] = field(default_factory=dict)  # token -> the largest count asked under it
    token_of: dict[str, str] = field(default_factory=dict)  # machine id -> the token it was made under
    born: dict[str, float] = field(default_factory=dict)
    died: dict[str, float] = field(default_factory=dict)
    hidden_until: dict[str, float] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)
    quiet: bool = False  # no faults (a settling period)

    def made_per_token(self) -> Counter[str]:
        return Counter(self.token_of.values())


class FaultyCloud:
    def __init__(self, inner: Any, clock: Any, rates: FaultRates, truth: Truth, seed: int,
                 on_time_passing: Callable[[], None] = lambda: None):
        self.inner, self.clock, self.rates, self.truth = inner, clock, rates, truth
        self.name, self.billing, self.capabilities = inner.name, inner.billing, inner.capabilities
        self.rng = random.Random(seed)
        self.on_time_passing = on_time_passing

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def _draw(self, kind: str) -> bool:
        rate: float = getattr(self.rates, kind)
        hit = not self.truth.quiet and rate > 0 and self.rng.random() < rate
        if hit:
            self.truth.injected[kind] += 1
        return hit

    def _maybe_slow(self) -> None:
        if not self._draw("slow"):
            return
        left = self.rng.uniform(1.0, self.rates.slow_s)
        while left > 0:
            step = min(_STEP_S, left)
            self.clock.advance(step)
            left -= step
            self.on_time_passing()

    def _call(self, effect: Callable[[], Any]) -> Any:
        self._maybe_slow()
        if self._draw("storm"):
            raise TransientError("injected: 503 before the effect")
        result = effect()
        self._maybe_slow()
        if self._draw("lost"):
            raise TransientError("injected: the answer was lost after the effect")
        return result

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self.truth.asked[spec.token] = max(spec.count, self.truth.asked.get(spec.token, 0))

        def effect() -> LaunchResult:
            result: LaunchResult = self.inner.create(spec)
            for inst in result.instances:
                self.truth.token_of[inst.id] = spec.token
                self.truth.born[inst.id] = self.clock.mono
                if self._draw("lag"):
                    self.truth.hidden_until[inst.id] = self.clock.mono + self.rng.uniform(1.0, self.rates.lag_s)
            return result

        result: LaunchResult = self._call(effect)
        return result

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        def effect() -> list[DestroyFailure]:
            live = {i.id for i in self.inner.all_machines()}
            failures: list[DestroyFailure] = self.inner.destroy(ids)
            failed = {f.id for f in failures}
            for machine_id in ids:
                if machine_id in live and machine_id not in failed:
                    self.truth.died.setdefault(machine_id, self.clock.mono)
            return failures

        result: list[DestroyFailure] = self._call(effect)
        return result

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        self._maybe_slow()
        if self._draw("storm"):
            raise TransientError("injected: 503 listing")
        listed: list[ProviderInstance] = self.inner.list_instances(fleet)
        now = self.clock.mono
        if listed and self._draw("forget"):
            victim = self.rng.choice(listed).id
            self.truth.hidden_until[victim] = now + self.rng.uniform(1.0, self.rates.forget_s)
        return [i for i in listed if self.truth.hidden_until.get(i.id, 0.0) <= now]
