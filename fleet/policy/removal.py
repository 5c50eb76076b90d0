"""Which machines to remove when a pool shrinks.

Machines that are not ready yet go first (they serve nobody and, billed per
second, cost the same as ready ones), newest first; then ready machines with
the least work left.  Only machines in the pool's view are candidates, and the
view only ever holds machines carrying our tags, so a machine that is not ours
can never be chosen.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet.model import Machine, MachineState

_NOT_READY = (MachineState.REQUESTED, MachineState.BOOTING)


def choose_victims(machines: Iterable[Machine], count: int) -> tuple[Machine, ...]:
    if count <= 0:
        return ()
    machines = tuple(machines)
    booting = sorted((m for m in machines if m.state in _NOT_READY), key=lambda m: (-m.created_at, m.id))
    ready = sorted(
        (m for m in machines if m.state is MachineState.READY),
        key=lambda m: (m.work_left, -m.created_at, m.id),
    )
    return tuple((booting + ready)[:count])
