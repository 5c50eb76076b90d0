"""The controller's clocks: the wall clock stamps what happened; elapsed time that costs money
is measured on a monotonic clock, so a step of the wall clock (an NTP step, a VM resume, a bad
RTC) bills nothing that did not run.

The rule, and what it gets wrong: `billing_now()` is the wall time at the process's first
reading plus the monotonic time since.  Within a process a step either way moves nothing
billed (a suspended VM's monotonic clock stops with it, and its machines ran: that real spend
is billed when the wall clock is trusted again, at the next process start).  Across processes
the wall clock at start is trusted: a restart while the wall clock is wrong bills (or skips)
the error once.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class BillingClock:
    def __init__(self, wall: Callable[[], float], monotonic: Callable[[], float]):
        self._wall = wall
        self._monotonic = monotonic
        self._anchor: tuple[float, float] | None = None  # (wall, monotonic) at the first reading

    def __call__(self) -> float:
        if self._anchor is None:
            self._anchor = (self._wall(), self._monotonic())
        wall0, mono0 = self._anchor
        return wall0 + (self._monotonic() - mono0)


def monotonic_for(wall: Callable[[], float]) -> Callable[[], float]:
    """The monotonic clock that goes with a wall clock: the system's for time.time, a test
    clock's own `monotonic` when it has one, else the wall clock itself (no protection)."""
    if wall is time.time:
        return time.monotonic
    own = getattr(wall, "monotonic", None)
    return own if callable(own) else wall
