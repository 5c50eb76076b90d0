"""The one virtual clock the tests hand to providers, the controller and injected sleeps."""

from __future__ import annotations

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """A settable clock; `sleep` records the wait and moves time on instead of waiting."""

    def __init__(self, start: float = T0):
        self.now = start
        self.mono = 0.0  # what time.monotonic would say: moved by time passing, never by a step
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def step(self, seconds: float) -> None:
        """The wall clock jumps (an NTP step, a VM resume, a bad RTC); no time passes."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        self.mono += max(0.0, seconds)
