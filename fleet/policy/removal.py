"""Which machines to remove when a pool shrinks.

By default machines that are not ready yet go first (they serve nobody and, billed per
second, cost the same as ready ones), newest first; then ready machines with the least
work left.  With `keep_booting` (latency pools, whose policy releases only machines that
have sat idle, see fleet/policy/latency.py) ready machines go first, the least work left
then the longest ready (without per-machine work: the newest of those ready a hold window,
which has the least to lose), and booting machines last: a boot already paid for is about to
serve the rise it was bought for.  Only machines in the pool's view are candidates, and
the view only ever holds machines carrying our tags, so a machine that is not ours can
never be chosen.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet.model import NOT_READY_STATES, Machine, MachineState


def choose_victims(machines: Iterable[Machine], count: int, keep_booting: bool = False,
                   work_seen: bool = True, settled_before: float = float("inf")) -> tuple[Machine, ...]:
    if count <= 0:
        return ()
    machines = tuple(m for m in machines if not m.in_flight)
    booting = sorted((m for m in machines if m.state in NOT_READY_STATES), key=lambda m: (-m.created_at, m.id))
    if keep_booting:
        def since(m: Machine) -> float:
            return m.ready_at if m.ready_at is not None else m.created_at

        def blind(m: Machine) -> tuple[bool, float, str]:
            # whatever a machine serves started after it came up: of those ready before
            # `settled_before` (the policy's hold; newer ones were just bought), the newest has
            # the least work to lose when it is cut off
            return since(m) > settled_before, -since(m), m.id

        ready = sorted((m for m in machines if m.state is MachineState.READY),
                       key=(lambda m: (m.work_left, since(m), m.id)) if work_seen else blind)
        return tuple((ready + booting)[:count])
    ready = sorted(
        (m for m in machines if m.state is MachineState.READY),
        key=lambda m: (m.work_left, -m.created_at, m.id),
    )
    return tuple((booting + ready)[:count])
