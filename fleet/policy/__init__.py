"""Pure decisions: no clock, no I/O.  `decide` is the one entry point; `LatencySettings` tunes it."""

from fleet.policy.decide import decide
from fleet.policy.settings import LatencySettings

__all__ = ["LatencySettings", "decide"]
