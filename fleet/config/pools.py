"""A pool: its machines, its limits, its policy's keys, its signals and its launch settings."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fleet.config.base import (
    DAY,
    HOUR,
    LABEL_NAME,
    MAX_MACHINES,
    MAX_SLOTS,
    NAME_PATTERN,
    CapUsd,
    ConfigPath,
    DbName,
    EnvName,
    Headers,
    HttpUrl,
    MachineCount,
    NonNegWindowSeconds,
    PriceUsd,
    ReadSeconds,
    Strict,
    WindowSeconds,
)
from fleet.config.signals import SignalConfig


class SimulationSettings(Strict):
    """Only `fleet simulate` reads these: how trace tokens become GPU seconds."""

    t0_s: Annotated[float, Field(ge=0, le=HOUR, allow_inf_nan=False)] = 0.05
    # tokens a second: below 1e-3 a token-count trace's requests last for years
    prefill_tps: Annotated[float, Field(ge=1e-3, le=1e9, allow_inf_nan=False)] = 8000.0
    decode_tps: Annotated[float, Field(ge=1e-3, le=1e9, allow_inf_nan=False)] = 60.0
    signal_lag_s: Annotated[float, Field(ge=0, le=HOUR, allow_inf_nan=False)] = 0.0
    boot_jitter_s: Annotated[float, Field(ge=0, le=DAY, allow_inf_nan=False)] = 0.0  # boot_seconds ± jitter


AWS_KEYS = ("subnets", "launch_template", "security_groups", "key_name", "capacity", "spot_fallback",
            "iam_instance_profile")


# preset → the label naming the machine in its series (see fleet/signals/machine_work.py)
MACHINE_WORK_PRESETS: dict[str, str] = {"vllm": "instance", "dcgm": "Hostname"}


class MachineWorkConfig(Strict):
    """Work on each machine, from one Prometheus query giving one series per machine, so a
    scale-down removes only idle machines (and the busy ones finish their work)."""

    url: HttpUrl
    query: str | None = None
    preset: Literal["vllm", "dcgm"] | None = None
    selector: dict[str, str] = Field(default_factory=dict)  # label matchers for presets
    label: str | None = None  # the label naming the machine; presets know theirs
    match: Literal["private_ip", "public_ip", "name", "id"] = "private_ip"  # what the label holds
    # a machine the query (answering for others) has shown no series for this long serves
    # nothing (a crashed server's series go stale): it counts as idle
    unread_idle_after_s: WindowSeconds = 900.0
    # set: a busy machine chosen for removal is drained instead of kept (tagged fleet-draining for
    # your load balancer, no longer capacity) and destroyed once it reads idle or after this long
    drain_timeout_s: WindowSeconds | None = None
    token_env: EnvName | None = None
    headers: Headers = Field(default_factory=dict)
    timeout_s: ReadSeconds = 5.0

    @model_validator(mode="after")
    def _query_or_preset(self) -> MachineWorkConfig:
        if (self.query is None) == (self.preset is None):
            raise ValueError("give exactly one of `query` or `preset`")
        if self.query is not None and self.selector:
            raise ValueError("`selector` applies to presets only; put the label matchers in `query`")
        if self.query is not None and self.label is None:
            raise ValueError("`label` is required with `query`: the label whose value names the machine, "
                             "e.g. \"instance\" for `sum by (instance) (...)`")
        bad = [n for n in (*self.selector, self.label or "x") if not re.fullmatch(LABEL_NAME, n)]
        if bad:
            raise ValueError(f"label names must match {LABEL_NAME}: {', '.join(bad)}")
        return self

    @property
    def machine_label(self) -> str:
        return self.label or MACHINE_WORK_PRESETS[self.preset or ""]


class PoolConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    provider: str
    size: Annotated[tuple[DbName, ...], Field(max_length=64)]
    region: Annotated[tuple[DbName, ...], Field(max_length=64)] = ()
    price_hourly_usd: PriceUsd | dict[str, PriceUsd] | None = None
    min: MachineCount = 0
    max: MachineCount
    max_hourly_usd: CapUsd | None = None
    boot_seconds: WindowSeconds = 180.0
    max_boot_seconds: WindowSeconds = 900.0
    scale_up_cooldown_s: NonNegWindowSeconds = 30.0
    scale_down_cooldown_s: NonNegWindowSeconds = 300.0
    scale_down_stabilization_s: NonNegWindowSeconds = 300.0
    tolerance: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1
    # at most max(max_step_up, current × step %) up per tick
    max_step_up: int = Field(default=4, ge=1, le=MAX_MACHINES)
    max_step_up_percent: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 100.0
    destroy_timeout_s: WindowSeconds = 600.0
    # Latency-aware policy (issue 6): when set, the pool is sized to start work within this budget.
    latency_budget_s: Annotated[float, Field(gt=0, le=DAY, allow_inf_nan=False)] | None = None
    slots_per_machine: int = Field(default=1, ge=1, le=MAX_SLOTS)
    signals: Annotated[tuple[SignalConfig, ...], Field(max_length=64)] = ()
    machine_work: MachineWorkConfig | None = None  # per-machine work: scale-down removes idle machines only
    simulation: SimulationSettings = SimulationSettings()
    # DigitalOcean
    image: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data_file: ConfigPath | None = None
    vpc_uuid: str | None = None
    # AWS
    subnets: tuple[str, ...] = ()
    launch_template: str | None = None
    security_groups: tuple[str, ...] = ()
    key_name: str | None = None
    capacity: Literal["on-demand", "spot"] = "on-demand"
    spot_fallback: Literal["on-demand", "none"] = "none"
    iam_instance_profile: str | None = None

    @field_validator("size", "region", "ssh_keys", "subnets", "security_groups", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("size")
    @classmethod
    def _some_size(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        if not sizes:
            raise ValueError("give at least one size")
        return sizes

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        self._signals_fit_the_policy()
        if self.max_boot_seconds < self.boot_seconds:
            raise ValueError(f"max_boot_seconds ({self.max_boot_seconds}) must be >= boot_seconds "
                             f"({self.boot_seconds})")
        if isinstance(self.price_hourly_usd, dict):
            unknown = sorted(set(self.price_hourly_usd) - set(self.size))
            if unknown:
                raise ValueError(f"price_hourly_usd names sizes not in `size`: {', '.join(unknown)}")
        # another cloud's launch setting at its default is accepted, and named (fleet/config/unused.py)
        foreign = {"digitalocean": AWS_KEYS, "aws": ("ssh_keys", "vpc_uuid")}.get(self.provider, ())
        for key in foreign:
            if getattr(self, key) not in (None, (), "on-demand", "none"):
                raise ValueError(f"`{key}` does not apply to provider {self.provider!r}")
        return self

    def _signals_fit_the_policy(self) -> None:
        if self.latency_budget_s is not None:
            return
        if any(s.kind == "queue_wait" for s in self.signals):
            raise ValueError("a `queue_wait` signal needs `latency_budget_s`: it tunes the latency policy "
                             "and says nothing about size on its own")
        for i, signal in enumerate(self.signals):
            key = {"queue_depth": "target_per_machine", "gpu_utilization": "target"}.get(signal.kind)
            if key is not None and getattr(signal, key) is None:
                raise ValueError(f"signals[{i}].{key} is required: it sizes the pool (a pool with "
                                 f"latency_budget_s sizes itself from slots_per_machine and needs none)")

    def price_override(self, size: str) -> float | None:
        if isinstance(self.price_hourly_usd, dict):
            return self.price_hourly_usd.get(size)
        return self.price_hourly_usd

