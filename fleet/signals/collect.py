"""Read every signal of every pool into `SignalReading`s (the policy's input).

Sources are read concurrently, and the whole read is bounded by a deadline: a source
whose client library cannot bound a call itself (a broker that accepts the login and
then never answers) becomes a missing reading instead of stalling the tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from fleet.config import MachineWorkConfig, PoolConfig, SignalConfig
from fleet.model import SignalReading
from fleet.signals import SourceReading, read_source
from fleet.signals.machine_work import MachineWorkReading
from fleet.signals.machine_work import describe as describe_machine_work
from fleet.signals.machine_work import read as read_machine_work

DEFAULT_TIMEOUT_S = 2.0  # static and file sources have no timeout of their own
GRACE_S = 1.0

_executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="fleet-signal")
# The read of each (pool, index (-1: per-machine work), config) still running from an earlier tick.  A thread
# blocked in a client library cannot be stopped; a new read of the same signal is not queued
# behind it, so one hung source holds one thread, not a new one each tick until all starve.
_running: dict[tuple[str, int, str], tuple[Future[Any], float]] = {}


def signal_name(index: int, signal: SignalConfig) -> str:
    return signal.name or f"{signal.kind}[{index}]"


def _combine(first: SourceReading, second: SourceReading) -> SourceReading:
    """Waiting + in-flight from two sources: missing when either is."""
    source = f"{first.source} + {second.source}"
    if first.value is None or second.value is None:
        errors = "; ".join(r.error for r in (first, second) if r.error)
        return SourceReading.missing(source, errors or "a part is missing")
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


def read_signal(index: int, signal: SignalConfig) -> SignalReading:
    reading = read_source(signal.source)
    extra = getattr(signal, "in_flight_source", None)
    if extra is not None:
        reading = _combine(reading, read_source(extra))
    value, error = reading.value, reading.error
    if value is not None and (why := implausible(signal.kind, value)) is not None:
        value, error = None, f"{reading.source}: {why}"
    return SignalReading(name=signal_name(index, signal), kind=signal.kind, value=value,
                         source=reading.source, age_s=reading.age_s, error=error)


def _timeout(signal: SignalConfig) -> float:
    sources = [signal.source, getattr(signal, "in_flight_source", None)]
    return sum(getattr(s, "timeout_s", DEFAULT_TIMEOUT_S) for s in sources if s is not None)


def read_pool_signals(pool: PoolConfig) -> tuple[SignalReading, ...]:
    return read_all([pool])[pool.name]


def read_all(pools: Sequence[PoolConfig]) -> dict[str, tuple[SignalReading, ...]]:
    return read_everything(pools)[0]


def _submit(key: tuple[str, int, str], started: float, fn: Any, *args: Any) -> tuple[Future[Any] | None, float]:
    """Start a read, unless the same read from an earlier tick is still running: then (None,
    how long it has been running)."""
    earlier = _running.get(key)
    if earlier is not None and not earlier[0].done():
        return None, started - earlier[1]
    future = _executor.submit(fn, *args)
    _running[key] = (future, started)
    return future, 0.0


def read_everything(pools: Sequence[PoolConfig]
                    ) -> tuple[dict[str, tuple[SignalReading, ...]], dict[str, MachineWorkReading]]:
    """Every pool's signals and, for pools that have one, its per-machine work, read at once."""
    started = time.monotonic()
    jobs = [(pool.name, i, signal, *_submit((pool.name, i, signal.model_dump_json()), started, read_signal, i, signal))
            for pool in pools for i, signal in enumerate(pool.signals)]
    work_jobs = [(pool.name, *_submit_work(pool, started)) for pool in pools if pool.machine_work is not None]
    out: dict[str, list[SignalReading]] = {pool.name: [] for pool in pools}
    for pool_name, i, signal, future, stuck_s in jobs:
        out[pool_name].append(_await(future, stuck_s, started, _timeout(signal) + GRACE_S,
                                     lambda why, i=i, signal=signal: _no_answer(i, signal, why)))
    work = {pool_name: _await_work(cfg, future, stuck_s, started) for pool_name, cfg, future, stuck_s in work_jobs}
    return {name: tuple(readings) for name, readings in out.items()}, work


def read_pool_machine_work(pool: PoolConfig) -> MachineWorkReading | None:
    """The pool's per-machine work now (the re-check before a destroy); None without one."""
    if pool.machine_work is None:
        return None
    started = time.monotonic()
    return _await_work(*_submit_work(pool, started), started)


def _submit_work(pool: PoolConfig, started: float) -> tuple[MachineWorkConfig, Future[Any] | None, float]:
    cfg = pool.machine_work
    assert cfg is not None
    return (cfg, *_submit((pool.name, -1, cfg.model_dump_json()), started, read_machine_work, cfg))


def _await_work(cfg: MachineWorkConfig, future: Future[Any] | None, stuck_s: float,
                started: float) -> MachineWorkReading:
    return _await(future, stuck_s, started, cfg.timeout_s + GRACE_S,
                  lambda why: MachineWorkReading(None, describe_machine_work(cfg), why))


def _await(future: Future[Any] | None, stuck_s: float, started: float, budget: float,
           missing: Callable[[str], Any]) -> Any:
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


def _no_answer(index: int, signal: SignalConfig, why: str) -> SignalReading:
    return SignalReading(name=signal_name(index, signal), kind=signal.kind, value=None,
                         source=signal.source.type, error=why)
