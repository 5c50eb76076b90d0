"""Per-machine work: which ready machine is busy, idle, unread or silent.

A pool with `[pools.machine_work]` reads each machine's work (a per-machine series matched to
the listing by `match`); the policy removes only machines that read idle.  A machine whose
series is missing is "unread" (kept as busy) until it has been missing `unread_idle_after_s`
while the query still answers for other machines of the pool: then it is "silent" (idle).
The tracker owns when each machine was last read, and the counts the metrics export.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from fleet.config import MachineWorkConfig, PoolConfig
from fleet.model import Machine, MachineState
from fleet.signals.machine_work import MachineWorkReading
from fleet.store.repo import MachineRow
from providers.base import ProviderInstance

_SEEN = tuple[str, str]  # (provider, machine id)


@dataclass(frozen=True)
class _Keys:
    """What each machine's series is keyed by (its `match` field as the listing shows it; an
    unlisted machine has only its id), and whether the reading has a series (readable or not)
    for any listed machine of the pool."""

    key_of: Callable[[str], str | None]
    matched: bool


def _keys(pool: PoolConfig, listing: Sequence[ProviderInstance], reading: MachineWorkReading | None) -> _Keys:
    cfg = _cfg(pool)
    match = cfg.match  # a ProviderInstance field: private_ip, public_ip, name or id
    keys = {inst.id: value for inst in listing if inst.pool == pool.name and (value := getattr(inst, match))}
    matched = reading is not None and reading.work is not None and any(
        k in reading.work or k in reading.unreadable for k in keys.values())
    return _Keys(lambda machine_id: keys.get(machine_id, machine_id if match == "id" else None), matched)


def _cfg(pool: PoolConfig) -> MachineWorkConfig:
    assert pool.machine_work is not None, "only pools with machine_work track it"
    return pool.machine_work


class WorkTracker:
    def __init__(self) -> None:
        self._seen_at: dict[_SEEN, float] = {}  # when each machine's work was last read (or first looked for)
        self._next: dict[_SEEN, float] = {}
        self.counts: dict[str, Counter[str]] = {}  # pool -> ready machines by reading, for the metrics

    def begin_view(self) -> None:
        """A new view: machines it does not see again drop out of the memory."""
        self._next = {}

    def end_view(self) -> None:
        self._seen_at = self._next

    def with_work(self, pool: PoolConfig, machines: tuple[Machine, ...], listing: Sequence[ProviderInstance],
                  reading: MachineWorkReading | None, now: float) -> tuple[tuple[Machine, ...], str]:
        """Each ready or draining machine's work from the pool's reading, and a summary."""
        keys = _keys(pool, listing, reading)
        out: list[Machine] = []
        counts: Counter[str] = Counter()
        for m in machines:
            if m.state in (MachineState.READY, MachineState.DRAINING):
                work, kind = self._work_of(pool, m.id, keys, reading, now, self._next)
                counts[kind] += m.state is MachineState.READY
                m = replace(m, work_left=work)
            out.append(m)
        self.counts[pool.name] = counts
        return tuple(out), _summary(_cfg(pool), reading, counts, keys.matched)

    def recheck(self, pool: PoolConfig, victims: list[MachineRow], listing: Sequence[ProviderInstance],
                reading: MachineWorkReading | None, now: float) -> tuple[list[MachineRow], list[str]]:
        """Re-read before a destroy: (the victims still idle, descriptions of those that took
        work since the plan or can no longer be read).  Machines not ready carry no work."""
        keys = _keys(pool, listing, reading)
        scratch = dict(self._seen_at)  # a re-check moves no clock of the view's
        keep, kept = [], []
        for v in victims:
            if v.state is MachineState.READY:
                work, kind = self._work_of(pool, v.provider_id, keys, reading, now, scratch)
                if work > 0:
                    kept.append(f"{v.provider_id} ({kind}{'' if math.isinf(work) else f' {work:g}'})")
                    continue
            keep.append(v)
        return keep, kept

    def _work_of(self, pool: PoolConfig, machine_id: str, keys: _Keys, reading: MachineWorkReading | None,
                 now: float, seen_at: dict[_SEEN, float]) -> tuple[float, str]:
        """(work, kind): the reading for the machine; inf ("unread") when none, or 0 ("silent")
        once the query, matching other machines of the pool, has shown none for it for
        unread_idle_after_s."""
        at = (pool.provider, machine_id)
        key = keys.key_of(machine_id)
        if reading is None or reading.work is None:
            seen_at[at] = now  # no evidence either way: the unread clock does not run
            return math.inf, "unread"
        if key is not None and key in reading.work:
            seen_at[at] = now
            work = reading.work[key]
            return work, ("busy" if work > 0 else "idle")
        if (key is not None and key in reading.unreadable) or not keys.matched:
            # its server answers with a NaN (alive, its work unknown), or no machine of the pool
            # matches (a wrong `match` or `label`): no evidence it is gone
            seen_at[at] = now
            return math.inf, "unread"
        since = seen_at[at] = self._seen_at.get(at, now)
        if now - since >= _cfg(pool).unread_idle_after_s:
            return 0.0, "silent"
        return math.inf, "unread"


def _summary(cfg: MachineWorkConfig, reading: MachineWorkReading | None, counts: Counter[str],
             matched: bool) -> str:
    where = reading.source if reading is not None else "per-machine work"
    if reading is None or reading.work is None:
        why = reading.error if reading is not None else "not read"
        return f"{where}: missing ({why}); no ready machine is known to be idle, none is removed"
    parts = [f"{counts[k]} {k}" for k in ("busy", "idle", "unread", "silent") if counts[k]]
    text = ", ".join(parts) or "no ready machine"
    if counts["unread"] and not matched:
        text += (f" (no series matches any machine of the pool by its {cfg.match}: check `match` and "
                 f"`label`; none is removed)")
    elif counts["unread"]:
        text += (f" (unread: no series matches its {cfg.match}; kept as busy until unread for "
                 f"{cfg.unread_idle_after_s:g}s)")
    if counts["silent"]:
        text += f" (silent: unread for {cfg.unread_idle_after_s:g}s or more, counted idle)"
    return f"{where}: {text}"
