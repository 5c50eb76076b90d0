"""Pure decisions: no clock, no I/O.  `decide` is the one entry point."""

from fleet.policy.decide import decide

__all__ = ["decide"]
