"""The whole config, and the checks that span its sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from fleet.config.base import Strict
from fleet.config.pools import PoolConfig
from fleet.config.sections import BudgetSection, FleetSection, ProvidersSection
from fleet.config.unused import ConfigWarning, unused_keys


class Config(Strict):
    fleet: FleetSection
    budget: BudgetSection = BudgetSection()
    providers: ProvidersSection = ProvidersSection()
    pools: tuple[PoolConfig, ...] = Field(default=(), max_length=1000)
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique: {', '.join(dupes)}")
        for pool in self.pools:
            if getattr(self.providers, pool.provider, None) is None:
                raise ValueError(
                    f"pools[{names.index(pool.name)}].provider: {pool.provider!r} is not configured "
                    f"under [providers] (configured: {', '.join(self.providers.configured()) or 'none'})"
                )
        self._timeouts_fit_the_tick()
        return self

    def _timeouts_fit_the_tick(self) -> None:
        # reads wait up to their timeout each tick: at or above the tick, every tick is late
        tick = self.fleet.tick_seconds

        def refuse(where: str, timeout: float, before: str = "") -> ValueError:
            return ValueError(f"{where}.timeout_s: {timeout:g}s{before} must be below fleet.tick_seconds "
                              f"({tick:g}s): a source that hangs would make every tick late")

        for i, pool in enumerate(self.pools):
            for j, signal in enumerate(pool.signals):
                waited = 0.0  # a signal's two sources are read one after the other
                for field in ("source", "in_flight_source"):
                    timeout = getattr(getattr(signal, field, None), "timeout_s", None)
                    if timeout is None:
                        continue
                    waited += timeout
                    if waited >= tick:
                        before = f" plus source.timeout_s {waited - timeout:g}s" if waited > timeout else ""
                        raise refuse(f"pools[{i}].signals[{j}].{field}", timeout, before)
            if pool.machine_work is not None and pool.machine_work.timeout_s >= tick:
                raise refuse(f"pools[{i}].machine_work", pool.machine_work.timeout_s)

    def warnings(self) -> tuple[ConfigWarning, ...]:
        """The keys set here that have no effect where they stand (fleet/config/unused.py)."""
        return unused_keys(self)

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

