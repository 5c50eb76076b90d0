"""The controller's clocks: the wall clock stamps what happened; elapsed time that costs money
is measured on a monotonic clock, so a step of the wall clock (an NTP step, a VM resume, a bad
RTC) bills nothing that did not run.

The rule, and what it gets wrong: `billing_now()` is an anchor plus the monotonic time since
the process first read it.  The anchor is where the last accrual left the ledger's clock
(`billed_to`, persisted with the wall time it was read at), moved on by the wall time since
(never back); with no record, the wall time now.  Within a process a step either way moves
nothing billed; a step while a previous process ran is in the record and bills nothing either.
What it gets wrong: a wall-clock step that happens while no process runs is billed (forward) or
skipped (backward) once; and a suspended VM's monotonic clock stops while its machines run, so
that real spend is billed only as far as the next restart's wall clock says.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from fleet.store.ledger import BillingAnchor


class BillingClock:
    def __init__(self, wall: Callable[[], float], monotonic: Callable[[], float], boot: str,
                 recorded: Callable[[], BillingAnchor | None] = lambda: None):
        """`boot`: what makes two readings of `monotonic` comparable (the host's boot); `recorded`:
        where the last accrual left the ledger's clock, if anywhere."""
        self._wall = wall
        self._monotonic = monotonic
        self.boot = boot
        self._recorded = recorded
        self._anchor: tuple[float, float] | None = None  # (billing time, monotonic) at the first reading

    def __call__(self) -> float:
        if self._anchor is None:
            self._anchor = (self._start(), self._monotonic())
        start, mono0 = self._anchor
        return start + (self._monotonic() - mono0)

    def _start(self) -> float:
        last = self._recorded()
        if last is None:
            return self._wall()
        if last.boot == self.boot:  # the same host and boot: its monotonic clock says what passed
            return last.billed_to + max(0.0, self._monotonic() - last.monotonic_at)
        return last.billed_to + max(0.0, self._wall() - last.wall_at)

    def anchor(self) -> BillingAnchor:
        """Where the ledger's clock stands now, to be recorded with an accrual."""
        return BillingAnchor(self(), self._wall(), self._monotonic(), self.boot)


def host_boot() -> str:
    """This host's boot (its monotonic clock counts from it), or the hostname alone."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown-boot"
    return f"{socket.gethostname()}/{boot_id}"


def monotonic_for(wall: Callable[[], float]) -> tuple[Callable[[], float], str]:
    """The monotonic clock that goes with a wall clock, and the boot its readings belong to:
    the system's for time.time; a test clock's own `monotonic` when it has one; else the wall
    clock itself (no protection)."""
    if wall is time.time:
        return time.monotonic, host_boot()
    own = getattr(wall, "monotonic", None)
    return (own if callable(own) else wall), f"virtual-{id(wall):x}"
