"""Read every signal of every pool into `SignalReading`s (the policy's input).

Sources are read concurrently, and the whole read is bounded by a deadline: a source
whose client library cannot bound a call itself (a broker that accepts the login and
then never answers) becomes a missing reading instead of stalling the tick.

`SignalCollector` owns the threads and the reads still in flight; whoever builds it (the
wiring) closes it.  The function that reads one source is a constructor argument, so a
test passes a slow or hung reader instead of patching this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from fleet.config import MachineWorkConfig, PoolConfig, SignalConfig, signal_name
from fleet.model import SignalReading
from fleet.signals import SourceReading, read_source
from fleet.signals.base import Missing
from fleet.signals.daemon_pool import DaemonPool
from fleet.signals.machine_work import MachineWorkReading
from fleet.signals.machine_work import describe as describe_machine_work
from fleet.signals.machine_work import read as read_machine_work

DEFAULT_TIMEOUT_S = 2.0  # static and file sources have no timeout of their own
GRACE_S = 1.0

T = TypeVar("T")
SourceReader = Callable[[Any], SourceReading]  # a source config -> its reading; never raises
WorkReader = Callable[[MachineWorkConfig], MachineWorkReading]
_Key = tuple[str, int, str]  # (pool, signal index (-1: per-machine work), the config as JSON)


class Readings(NamedTuple):
    """One read of every pool: its signals, and its per-machine work where it has one."""

    signals: dict[str, tuple[SignalReading, ...]]
    machine_work: dict[str, MachineWorkReading]


def _combine(first: SourceReading, second: SourceReading) -> SourceReading:
    """Waiting + in-flight from two sources: missing when either is."""
    source = f"{first.source} + {second.source}"
    if first.value is None or second.value is None:
        errors = "; ".join(r.error for r in (first, second) if r.error)
        code = first.code if first.value is None else second.code
        return SourceReading.missing(source, errors or "a part is missing", code or Missing.FAILED)
    ages = [a for a in (first.age_s, second.age_s) if a is not None]
    return SourceReading(first.value + second.value, source, max(ages) if ages else None)


# Kinds read as a share of capacity: a value above this is on another scale (DCGM's 0-100).
_SHARE_KINDS = frozenset({"gpu_utilization", "memory_pressure"})
_SHARE_MAX = 1.0 + 1e-6


def implausible(kind: str, value: float) -> str | None:
    """Why a reading cannot be what its kind says (it is then missing, never clamped to a
    number the policy would act on), or None."""
    if value < 0:
        return f"negative value {value:g} is not a {kind}: read as missing, not as 0"
    if kind in _SHARE_KINDS and value > _SHARE_MAX:
        return (f"{kind} {value:g} is above 1: a share of capacity is 0-1 (a 0-100 metric such as "
                f"DCGM_FI_DEV_GPU_UTIL needs / 100 in the query)")
    return None


def read_signal(index: int, signal: SignalConfig, read: SourceReader = read_source) -> SignalReading:
    """One signal through `read`: its source, plus its in-flight source when it has one."""
    reading = read(signal.source)
    extra = getattr(signal, "in_flight_source", None)
    if extra is not None:
        reading = _combine(reading, read(extra))
    value, error = reading.value, reading.error
    if value is not None and (why := implausible(signal.kind, value)) is not None:
        value, error = None, f"{reading.source}: {why}"
    return SignalReading(name=signal_name(index, signal), kind=signal.kind, value=value,
                         source=reading.source, age_s=reading.age_s, error=error)


class SignalCollector:
    """Reads pools' signals and per-machine work concurrently, each within its deadline (the
    `SignalReader` the tick observes through, fleet/observe.py).

    The read of each signal still running from an earlier tick is remembered: a thread blocked
    in a client library cannot be stopped, so a new read of the same signal is not queued behind
    it, and one hung source holds one thread, not a new one each tick until all starve.
    """

    def __init__(self, read: SourceReader = read_source, read_work: WorkReader = read_machine_work, *,
                 default_timeout_s: float = DEFAULT_TIMEOUT_S, grace_s: float = GRACE_S,
                 max_workers: int = 32) -> None:
        self._read = read
        self._read_work = read_work
        self.default_timeout_s = default_timeout_s
        self.grace_s = grace_s
        # daemon workers: a read hung in a client library never holds the process at exit
        self._executor = DaemonPool(max_workers=max_workers, name="fleet-signal")
        self._running: dict[_Key, tuple[Future[Any], float]] = {}

    def __enter__(self) -> SignalCollector:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop taking reads; a read hung in a client library is abandoned, not waited for."""
        self._executor.shutdown()
        self._running.clear()

    def read_everything(self, pools: Sequence[PoolConfig]) -> Readings:
        """Every pool's signals and, for pools that have one, its per-machine work, read at once."""
        started = time.monotonic()
        jobs = [(pool.name, i, signal, *self._submit((pool.name, i, signal.model_dump_json()), started,
                                                      read_signal, i, signal, self._read))
                for pool in pools for i, signal in enumerate(pool.signals)]
        work_jobs = [(pool.name, *self._submit_work(pool, started)) for pool in pools
                     if pool.machine_work is not None]
        out: dict[str, list[SignalReading]] = {pool.name: [] for pool in pools}
        for pool_name, i, signal, future, stuck_s in jobs:
            out[pool_name].append(self._await(future, stuck_s, started, self._timeout(signal) + self.grace_s,
                                              _no_answer_of(i, signal)))
        work = {name: self._await_work(cfg, future, stuck_s, started) for name, cfg, future, stuck_s in work_jobs}
        return Readings({name: tuple(readings) for name, readings in out.items()}, work)

    def read_pool_machine_work(self, pool: PoolConfig) -> MachineWorkReading | None:
        """The pool's per-machine work now (the re-check before a destroy); None without one."""
        if pool.machine_work is None:
            return None
        started = time.monotonic()
        return self._await_work(*self._submit_work(pool, started), started)

    def _timeout(self, signal: SignalConfig) -> float:
        sources = [signal.source, getattr(signal, "in_flight_source", None)]
        return sum(getattr(s, "timeout_s", self.default_timeout_s) for s in sources if s is not None)

    def _submit(self, key: _Key, started: float, fn: Callable[..., T], *args: Any) -> tuple[Future[T] | None, float]:
        """Start a read, unless the same read from an earlier tick is still running: then (None,
        how long it has been running)."""
        earlier = self._running.get(key)
        if earlier is not None and not earlier[0].done():
            return None, started - earlier[1]
        future = self._executor.submit(fn, *args)
        self._running[key] = (future, started)
        return future, 0.0

    def _submit_work(self, pool: PoolConfig, started: float
                     ) -> tuple[MachineWorkConfig, Future[MachineWorkReading] | None, float]:
        cfg = pool.machine_work
        assert cfg is not None
        return (cfg, *self._submit((pool.name, -1, cfg.model_dump_json()), started, self._read_work, cfg))

    def _await_work(self, cfg: MachineWorkConfig, future: Future[MachineWorkReading] | None, stuck_s: float,
                    started: float) -> MachineWorkReading:
        return self._await(future, stuck_s, started, cfg.timeout_s + self.grace_s,
                           lambda why: MachineWorkReading(None, describe_machine_work(cfg), why))

    @staticmethod
    def _await(future: Future[T] | None, stuck_s: float, started: float, budget: float,
               missing: Callable[[str], T]) -> T:
        """The read's answer within `budget` seconds of `started`, or `missing(why)`: it hangs from
        an earlier tick (no future), or it did not answer in time."""
        if future is None:
            return missing(_hangs(stuck_s))
        try:
            return future.result(timeout=max(0.0, started + budget - time.monotonic()))
        except FutureTimeout:
            return missing(f"no answer within {budget:g}s: the source did not respond")


def _hangs(stuck_s: float) -> str:
    return f"the read started {stuck_s:.0f}s ago has not returned: the source hangs (not read again until it does)"


def _no_answer_of(index: int, signal: SignalConfig) -> Callable[[str], SignalReading]:
    def no_answer(why: str) -> SignalReading:
        return SignalReading(name=signal_name(index, signal), kind=signal.kind, value=None,
                             source=signal.source.type, error=why)
    return no_answer
