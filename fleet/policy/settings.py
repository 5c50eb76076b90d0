"""The latency policy's constants (fleet/policy/latency.py), as one frozen value passed in.

`decide` takes a `LatencySettings` (the shipped `DEFAULT` when not given) and hands it down to
every stage, so a benchmark or a test tunes the policy by building another value
(`dataclasses.replace(DEFAULT, beta=1.0)`) instead of changing module state.

Tuned on the first half of each trace in ../shared/traces (bench/scaling.py), judged on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LatencySettings:
    hold_boots: float = 1.0  # keep capacity this many boot times after it was last needed
    rise_quantile: float = 0.99  # of past rises above the hold within one boot time
    smooth_s: float = 120.0  # the level: mean demand over this long
    backlog_factor: float = 1.25  # queued work counts at most this many times the busy machines ...
    backlog_slack: float = 1.0  # ... plus this many machines
    history_boots: float = 20.0  # history read: this many boot times (at least an hour)
    evidence_boots: float = 3.0  # no scale-down before the history covers this many boot times
    positive_only: bool = True  # the quantile is over the windows where demand rose
    beta: float = 1.5  # square-root staffing: beta x sqrt(busy slots) idle slots at least
    # queued work counts as demand unless work started lately waited at most this share of the
    # budget (pools with a `queue_wait` signal only; see fleet/policy/latency.py)
    wait_clears: float = 0.5
    surge_max: float = 10.0  # a surge estimate multiplies the busy machines at most this many times a tick
    max_samples: int = 60  # rises are measured on at most this many samples
    surge: bool = True  # size for a surge while queued work is late (False: the bounded backlog count only)


DEFAULT = LatencySettings()

__all__ = ["DEFAULT", "LatencySettings"]
