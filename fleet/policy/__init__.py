"""Pure decisions: no clock, no I/O.  `decide` is the one entry point; `LatencySettings` tunes it;
`lookback_s` and `reads_previous_tick` say what history it needs from the store."""

from fleet.config import PoolConfig
from fleet.policy.decide import decide
from fleet.policy.latency import history_window_s, reads_previous_tick
from fleet.policy.settings import LatencySettings


def lookback_s(pool: PoolConfig) -> float:
    """How much decision history the policy reads: the stabilization window, or the latency
    policy's own window (its demand history, so a restart keeps what it learned)."""
    if pool.latency_budget_s is not None:
        return history_window_s(pool)
    return max(pool.scale_down_stabilization_s, 60.0)


__all__ = ["LatencySettings", "decide", "lookback_s", "reads_previous_tick"]
