"""`static`: a constant from the config (tests, demos, a floor)."""

from __future__ import annotations

from fleet.config import StaticSource
from fleet.signals.base import SourceReading


def read(cfg: StaticSource) -> SourceReading:
    return SourceReading(value=float(cfg.value), source="static", age_s=0.0)
