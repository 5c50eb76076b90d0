"""TOML → validated, frozen config.  Every error names its key path and file.

The key names here are the user-facing contract (see config.example.toml):
add keys freely, never rename one.  Unknown keys are errors everywhere, so a
misspelled cap can never be silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"  # safe in tags, Droplet names, EC2 tokens


class ConfigError(Exception):
    """Raised with every problem found, each line `file: key.path: message`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sections


class FleetSection(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    database_url: str = "sqlite:///fleet.db"
    tick_seconds: PositiveFloat = 15.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: no HTTP endpoint
    lease_seconds: PositiveFloat = 60.0  # leader lease when several replicas share a database
    decisions_retention_days: PositiveFloat = 30.0  # older decision rows are pruned (audit, not billing)

    @field_validator("database_url")
    @classmethod
    def _relative_sqlite(cls, url: str, info: ValidationInfo) -> str:
        prefix = "sqlite:///"
        base = (info.context or {}).get("base_dir")
        if url.startswith(prefix) and not url.startswith(prefix + "/") and base is not None:
            rest = url[len(prefix):]
            if rest and rest != ":memory:":
                return prefix + str((Path(base) / rest).resolve())
        return url


class BudgetSection(Strict):
    max_hourly_usd: PositiveFloat | None = None


class SimulatedProviderConfig(Strict):
    quota_machines: int | None = Field(default=None, ge=0)
    capacity_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0
    prices: dict[str, PositiveFloat] = Field(default_factory=dict)  # size → $/h, over the built-in table


class DigitalOceanProviderConfig(Strict):
    token_env: str = "DIGITALOCEAN_TOKEN"
    api_url: str = "https://api.digitalocean.com"
    timeout_s: PositiveFloat = 30.0
    capacity_miss_ttl_s: NonNegFloat = 300.0


class AwsProviderConfig(Strict):
    region: str
    endpoint_url: str | None = None
    capacity_miss_ttl_s: NonNegFloat = 300.0


class ProvidersSection(Strict):
    simulated: SimulatedProviderConfig | None = None
    digitalocean: DigitalOceanProviderConfig | None = None
    aws: AwsProviderConfig | None = None

    def configured(self) -> list[str]:
        return [name for name in ("simulated", "digitalocean", "aws") if getattr(self, name) is not None]


# ---------------------------------------------------------------- signal sources


class StaticSource(Strict):
    type: Literal["static"]
    value: Annotated[float, Field(allow_inf_nan=False)]


class FileSource(Strict):
    type: Literal["file"]
    path: ConfigPath
    key: str
    # a file not rewritten for this long is missing (its writer died); unset: any age
    max_age_s: PositiveFloat | None = None


class PrometheusSource(Strict):
    type: Literal["prometheus"]
    url: str
    query: str | None = None
    preset: (
        Literal[
            "dcgm_gpu_utilization",
            "dcgm_memory_used_fraction",
            "vllm_queue",
            "vllm_kv_cache",
            "vllm_queue_wait",
            "triton_queue",
            "triton_queue_wait",
            "tgi_queue",
        ]
        | None
    ) = None
    selector: dict[str, str] = Field(default_factory=dict)  # label matchers for presets
    token_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_age_s: PositiveFloat = 120.0
    timeout_s: PositiveFloat = 5.0
    # the queue_wait presets' rate() window (default 60 s): at least twice the scrape interval,
    # or rate() has one sample and the reading is always missing
    rate_window_s: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _query_or_preset(self) -> PrometheusSource:
        if (self.query is None) == (self.preset is None):
            raise ValueError("give exactly one of `query` or `preset`")
        if self.rate_window_s is not None and self.preset not in ("vllm_queue_wait", "triton_queue_wait"):
            raise ValueError("`rate_window_s` applies to the vllm_queue_wait and triton_queue_wait presets only")
        if self.query is not None and self.selector:
            raise ValueError("`selector` applies to presets only; put the label matchers in `query`")
        bad = [name for name in self.selector if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name)]
        if bad:
            raise ValueError(f"selector label names must match [a-zA-Z_][a-zA-Z0-9_]*: {', '.join(bad)}")
        return self


class RedisSource(Strict):
    type: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    key: str
    mode: Literal["auto", "list", "stream", "group"] = "auto"
    group: str | None = None  # consumer group, for mode "group"
    password_env: str | None = None
    timeout_s: PositiveFloat = 2.0

    @model_validator(mode="after")
    def _group_with_mode(self) -> RedisSource:
        if (self.mode == "group") != (self.group is not None):
            raise ValueError('`group` is required with mode = "group" and only valid with it')
        return self


class RabbitMQSource(Strict):
    type: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue: str
    include_unacked: bool = False
    management_url: str | None = None  # read over the management HTTP API instead of AMQP
    password_env: str | None = None
    timeout_s: PositiveFloat = 3.0

    @model_validator(mode="after")
    def _unacked_needs_management(self) -> RabbitMQSource:
        if self.include_unacked and self.management_url is None:
            # a passive queue.declare over AMQP reports only the ready count
            raise ValueError("`include_unacked` needs `management_url` (AMQP cannot count unacked messages)")
        return self


class SqsSource(Strict):
    type: Literal["sqs"]
    queue_url: str
    region: str | None = None
    endpoint_url: str | None = None
    include_in_flight: bool = True
    timeout_s: PositiveFloat = 5.0


class HttpJsonSource(Strict):
    type: Literal["http_json"]
    url: str
    path: str  # dotted path to the number, e.g. "queues.imagegen.depth"
    headers: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None
    timeout_s: PositiveFloat = 5.0


SourceConfig = Annotated[
    StaticSource | FileSource | PrometheusSource | RedisSource | RabbitMQSource | SqsSource | HttpJsonSource,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- signals


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
    target: Annotated[float, Field(gt=0, le=1)] | None = None
    source: SourceConfig


class BacklogSecondsSignal(Signal):
    """Queue depth × GPU seconds per item, drained within `drain_seconds`."""

    kind: Literal["backlog_seconds"]
    name: str | None = None
    seconds_per_item: PositiveFloat
    drain_seconds: PositiveFloat
    source: SourceConfig
    in_flight_source: SourceConfig | None = None


class MemoryPressureSignal(Signal):
    """GPU memory used fraction (0..1); scale out while above `target`."""

    kind: Literal["memory_pressure"]
    name: str | None = None
    target: Annotated[float, Field(gt=0, le=1)]
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


# ---------------------------------------------------------------- pools


class SimulationSettings(Strict):
    """Only `fleet simulate` reads these: how trace tokens become GPU seconds."""

    t0_s: NonNegFloat = 0.05
    prefill_tps: PositiveFloat = 8000.0
    decode_tps: PositiveFloat = 60.0
    signal_lag_s: NonNegFloat = 0.0
    boot_jitter_s: NonNegFloat = 0.0  # boot time drawn from boot_seconds ± jitter


AWS_KEYS = ("subnets", "launch_template", "security_groups", "key_name", "capacity", "spot_fallback",
            "iam_instance_profile")


LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
# preset → the label naming the machine in its series (see fleet/signals/machine_work.py)
MACHINE_WORK_PRESETS: dict[str, str] = {"vllm": "instance", "dcgm": "Hostname"}


class MachineWorkConfig(Strict):
    """Work on each machine, from one Prometheus query giving one series per machine, so a
    scale-down removes only idle machines (and the busy ones finish their work)."""

    url: str
    query: str | None = None
    preset: Literal["vllm", "dcgm"] | None = None
    selector: dict[str, str] = Field(default_factory=dict)  # label matchers for presets
    label: str | None = None  # the label naming the machine; presets know theirs
    match: Literal["private_ip", "public_ip", "name", "id"] = "private_ip"  # what the label holds
    # a machine the query (answering for others) has shown no series for this long serves
    # nothing (a crashed server's series go stale): it counts as idle
    unread_idle_after_s: PositiveFloat = 900.0
    # set: a busy machine chosen for removal is drained instead of kept (tagged fleet-draining for
    # your load balancer, no longer capacity) and destroyed once it reads idle or after this long
    drain_timeout_s: PositiveFloat | None = None
    token_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: PositiveFloat = 5.0

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
    size: tuple[str, ...]
    region: tuple[str, ...] = ()
    price_hourly_usd: PositiveFloat | dict[str, PositiveFloat] | None = None
    min: int = Field(default=0, ge=0)
    max: int = Field(ge=0)
    max_hourly_usd: PositiveFloat | None = None
    boot_seconds: PositiveFloat = 180.0
    max_boot_seconds: PositiveFloat = 900.0
    scale_up_cooldown_s: NonNegFloat = 30.0
    scale_down_cooldown_s: NonNegFloat = 300.0
    scale_down_stabilization_s: NonNegFloat = 300.0
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    max_step_up: int = Field(default=4, ge=1)  # at most max(max_step_up, current × step %) up per tick
    max_step_up_percent: NonNegFloat = 100.0
    destroy_timeout_s: PositiveFloat = 600.0
    # Latency-aware policy (issue 6): when set, the pool is sized to start work within this budget.
    latency_budget_s: PositiveFloat | None = None
    slots_per_machine: int = Field(default=1, ge=1)
    signals: tuple[SignalConfig, ...] = ()
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
        if self.latency_budget_s is None and any(s.kind == "queue_wait" for s in self.signals):
            raise ValueError("a `queue_wait` signal needs `latency_budget_s`: it tunes the latency policy "
                             "and says nothing about size on its own")
        if self.latency_budget_s is None:
            for i, signal in enumerate(self.signals):
                key = {"queue_depth": "target_per_machine", "gpu_utilization": "target"}.get(signal.kind)
                if key is not None and getattr(signal, key) is None:
                    raise ValueError(f"signals[{i}].{key} is required: it sizes the pool (a pool with "
                                     f"latency_budget_s sizes itself from slots_per_machine and needs none)")
        if self.max_boot_seconds < self.boot_seconds:
            raise ValueError(f"max_boot_seconds ({self.max_boot_seconds}) must be >= boot_seconds "
                             f"({self.boot_seconds})")
        if isinstance(self.price_hourly_usd, dict):
            unknown = sorted(set(self.price_hourly_usd) - set(self.size))
            if unknown:
                raise ValueError(f"price_hourly_usd names sizes not in `size`: {', '.join(unknown)}")
        foreign = {"digitalocean": AWS_KEYS, "aws": ("ssh_keys", "vpc_uuid")}.get(self.provider, ())
        for key in foreign:
            if getattr(self, key) not in (None, (), "on-demand", "none"):
                raise ValueError(f"`{key}` does not apply to provider {self.provider!r}")
        return self

    def price_override(self, size: str) -> float | None:
        if isinstance(self.price_hourly_usd, dict):
            return self.price_hourly_usd.get(size)
        return self.price_hourly_usd


class Config(Strict):
    fleet: FleetSection
    budget: BudgetSection = BudgetSection()
    providers: ProvidersSection = ProvidersSection()
    pools: tuple[PoolConfig, ...] = ()
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

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


# ---------------------------------------------------------------- loading


def _loc_to_path(loc: tuple[Any, ...], data: Any) -> str:
    """('pools', 1, 'signals', 0, 'queue_depth', 'target_per_machine') → pools[1].signals[0].target_per_machine.

    Pydantic puts union tags (discriminator values, type names) into the location;
    walk the real data so only keys the user wrote appear.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and part < len(node) else None
        elif isinstance(node, dict) and part in node:
            out += ("." if out else "") + str(part)
            node = node[part]
        elif isinstance(node, dict) or node is None:
            # a union tag (skip) or a missing required key (keep)
            if node is None or re.match(r"^(function-|tagged-union|constrained-|[a-z]+\[)", str(part)) or part in (
                "str", "float", "int", "dict[str,float]", "tuple[str, ...]",
            ) or _is_tag(part, node):
                continue
            out += ("." if out else "") + str(part)
        else:
            continue
    return out or "(top level)"


def _is_tag(part: Any, node: dict) -> bool:
    return part in (node.get("kind"), node.get("type"))


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"]
    msg = re.sub(r"^Value error, ", "", msg)
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling)"
    if err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op, key = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
                   "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}[err["type"]]
        bound = err["ctx"][key]
        return f"must be {op} {bound:g}" if isinstance(bound, int | float) else f"must be {op} {bound}"
    return msg[:1].lower() + msg[1:]


def parse_config(data: dict[str, Any], source: Path | str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _loc_to_path(tuple(err["loc"]), data)
            problems.append(f"{source}: {path}: {_message(err)}")
        raise ConfigError(sorted(set(problems), key=problems.index)) from None
    return cfg.model_copy(update={"source_path": Path(source) if not isinstance(source, Path) else source})


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(data, source=path, base_dir=path.resolve().parent)

