"""A controller on a virtual clock and the embedded cloud, for tick-level tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.config import Config
from fleet.controller import Controller
from fleet.wiring import build_controller
from providers.simulated import SimulatedCloud
from tests.builders import file_source, make_config, pool, queue
from tests.clock import FakeClock as Clock


def demo_config(database_url: str, signals_path: Path, **overrides: Any) -> Config:
    """config.example.toml's pool, with the queue read from a file the test writes (`budget` is the
    fleet's `max_hourly_usd`, None for an empty `[budget]`; every other override is the pool's)."""
    budget = overrides.pop("budget", 40.0)
    return make_config(
        pool("imagegen", **dict(region="tor1", min=0, max=10, max_hourly_usd=20.0, boot_seconds=180,
                                max_boot_seconds=900, scale_up_cooldown_s=30, scale_down_cooldown_s=300,
                                scale_down_stabilization_s=300,
                                signals=[queue(file_source(signals_path, "queue"))]) | overrides),
        fleet={"name": "demo", "database_url": database_url, "tick_seconds": 15, "metrics_port": 0},
        budget=budget if budget is not None else {})


class Crash(Exception):
    """Stands for the process dying: not a ProviderError, so nothing in the tick catches it."""


class CrashingCloud:
    """Delegates to a provider; crashes once, before or after its chosen call (while armed)."""

    def __init__(self, inner: Any, call: str, when: str, armed: bool = True):
        self.inner, self.call, self.when = inner, call, when
        self.name, self.billing = inner.name, inner.billing
        self.armed = armed

    def __getattr__(self, item: str) -> Any:
        attr = getattr(self.inner, item)
        if item != self.call:
            return attr
        return lambda *args: self._wrap(item, *args)

    def _wrap(self, call: str, *args: Any) -> Any:
        fire, self.armed = self.armed, False
        if fire and self.when == "before":
            raise Crash(f"before {call}")
        result = getattr(self.inner, call)(*args)
        if fire and self.when == "after":
            raise Crash(f"after {call}")
        return result


def write_signals(path: Path, **values: Any) -> None:
    path.write_text(json.dumps(values))


@dataclass
class Rig:
    config: Config
    clock: Clock
    cloud: SimulatedCloud
    signals: Path

    def controller(self, **kw: Any) -> Controller:
        """A fresh controller on the same database and cloud (what a restart gives)."""
        kw.setdefault("providers", {"simulated": self.cloud})
        return build_controller(self.config, clock=self.clock, **kw)

    def set(self, **values: Any) -> None:
        write_signals(self.signals, **values)

    def cloud_ids(self) -> set[str]:
        return {m.id for m in self.cloud.all_machines()}


def make_rig(database_url: str, tmp_path: Path, **pool: Any) -> Rig:
    clock = Clock()
    signals = tmp_path / "signals.json"
    write_signals(signals, queue=0)
    cfg = demo_config(database_url, signals, **pool)
    return Rig(config=cfg, clock=clock, cloud=SimulatedCloud(clock=clock), signals=signals)
