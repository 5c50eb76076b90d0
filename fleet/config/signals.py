"""Signals: what a pool sizes from, one model per `kind`, each reading one source."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fleet.config.base import PositiveFloat, Strict, WindowSeconds
from fleet.config.sources import SourceConfig

# The Prometheus presets each read one kind of quantity: a preset under a signal of another kind
# reads the wrong units (a 0-1 utilization as a queue of 0.95 items scales a busy pool down).
PRESET_KINDS = {
    "queue_depth": ("vllm_queue", "triton_queue", "tgi_queue"),
    "backlog_seconds": ("vllm_queue", "triton_queue", "tgi_queue"),
    "gpu_utilization": ("dcgm_gpu_utilization",),
    "memory_pressure": ("dcgm_memory_used_fraction", "vllm_kv_cache"),
    "queue_wait": ("vllm_queue_wait", "triton_queue_wait"),
}


class Signal(Strict):
    @model_validator(mode="after")
    def _presets_fit_the_kind(self) -> Signal:
        kind = self.kind  # type: ignore[attr-defined]
        for field in ("source", "in_flight_source"):
            preset = getattr(getattr(self, field, None), "preset", None)
            if preset is not None and preset not in PRESET_KINDS[kind]:
                raise ValueError(f"{field}: preset {preset!r} does not read a {kind} (presets for {kind}: "
                                 f"{', '.join(PRESET_KINDS[kind])}; or give a `query`)")
        return self


class QueueDepthSignal(Signal):
    """Waiting + running work items; one machine per `target_per_machine` (required unless the
    pool has `latency_budget_s`, whose policy sizes by `slots_per_machine`)."""

    kind: Literal["queue_depth"]
    name: str | None = None
    target_per_machine: PositiveFloat | None = None
    source: SourceConfig
    in_flight_source: SourceConfig | None = None  # added to `source` when waiting and running are apart


class GpuUtilizationSignal(Signal):
    """0..1 over the pool's ready machines; HPA's ceil(ready * value / target) (`target` is
    required unless the pool has `latency_budget_s`)."""

    kind: Literal["gpu_utilization"]
    name: str | None = None
    target: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    source: SourceConfig


class BacklogSecondsSignal(Signal):
    """Queue depth × GPU seconds per item, drained within `drain_seconds`."""

    kind: Literal["backlog_seconds"]
    name: str | None = None
    seconds_per_item: WindowSeconds
    drain_seconds: WindowSeconds
    source: SourceConfig
    in_flight_source: SourceConfig | None = None


class MemoryPressureSignal(Signal):
    """GPU memory used fraction (0..1); scale out while above `target`."""

    kind: Literal["memory_pressure"]
    name: str | None = None
    target: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    source: SourceConfig


class QueueWaitSignal(Signal):
    """Seconds the work started lately waited in the queue: the Prometheus presets read the p99
    of vLLM's `vllm:request_queue_time_seconds` (or Triton's mean) over the last minute, and
    `fleet simulate` the longest wait of the work started in the last tick.  Latency pools use it
    to leave out queued work that clears within the budget."""

    kind: Literal["queue_wait"]
    name: str | None = None
    source: SourceConfig


SignalConfig = Annotated[
    QueueDepthSignal | GpuUtilizationSignal | BacklogSecondsSignal | MemoryPressureSignal | QueueWaitSignal,
    Field(discriminator="kind"),
]


def signal_name(index: int, signal: SignalConfig) -> str:
    """A signal's name in readings, metrics and reasons: its `name`, else `<kind>[<index>]`."""
    return signal.name or f"{signal.kind}[{index}]"
