"""Where a signal's number comes from: one model per source `type`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from fleet.config.base import (
    AWS_REGION,
    LABEL_NAME,
    AmqpUrl,
    ConfigPath,
    EnvName,
    Headers,
    HttpUrl,
    PositiveFloat,
    ReadSeconds,
    RedisUrl,
    Strict,
)


class StaticSource(Strict):
    type: Literal["static"]
    value: Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]


class FileSource(Strict):
    type: Literal["file"]
    path: ConfigPath
    key: str
    # a file not rewritten for this long is missing (its writer died); unset: any age
    max_age_s: PositiveFloat | None = None  # an age is compared, never added to a time: any finite bound


class PrometheusSource(Strict):
    type: Literal["prometheus"]
    url: HttpUrl
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
    token_env: EnvName | None = None
    headers: Headers = Field(default_factory=dict)
    max_age_s: PositiveFloat = 120.0  # compared with a sample's age only
    timeout_s: ReadSeconds = 5.0
    # the queue_wait presets' rate() window (default 60 s): at least twice the scrape interval,
    # or rate() has one sample and the reading is always missing
    rate_window_s: Annotated[float, Field(ge=1, le=86400, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _query_or_preset(self) -> PrometheusSource:
        if (self.query is None) == (self.preset is None):
            raise ValueError("give exactly one of `query` or `preset`")
        if self.rate_window_s is not None and self.preset not in ("vllm_queue_wait", "triton_queue_wait"):
            raise ValueError("`rate_window_s` applies to the vllm_queue_wait and triton_queue_wait presets only")
        if self.query is not None and self.selector:
            raise ValueError("`selector` applies to presets only; put the label matchers in `query`")
        bad = [name for name in self.selector if not re.fullmatch(LABEL_NAME, name)]
        if bad:
            raise ValueError(f"selector label names must match [a-zA-Z_][a-zA-Z0-9_]*: {', '.join(bad)}")
        return self


class RedisSource(Strict):
    type: Literal["redis"]
    url: RedisUrl = "redis://127.0.0.1:6379/0"
    key: str
    mode: Literal["auto", "list", "stream", "group"] = "auto"
    group: str | None = None  # consumer group, for mode "group"
    password_env: EnvName | None = None
    timeout_s: ReadSeconds = 2.0

    @model_validator(mode="after")
    def _group_with_mode(self) -> RedisSource:
        if (self.mode == "group") != (self.group is not None):
            raise ValueError('`group` is required with mode = "group" and only valid with it')
        return self


class RabbitMQSource(Strict):
    type: Literal["rabbitmq"]
    url: AmqpUrl = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue: str
    include_unacked: bool = False
    management_url: HttpUrl | None = None  # read over the management HTTP API instead of AMQP
    password_env: EnvName | None = None
    timeout_s: ReadSeconds = 3.0

    @model_validator(mode="after")
    def _unacked_needs_management(self) -> RabbitMQSource:
        if self.include_unacked and self.management_url is None:
            # a passive queue.declare over AMQP reports only the ready count
            raise ValueError("`include_unacked` needs `management_url` (AMQP cannot count unacked messages)")
        return self


class SqsSource(Strict):
    type: Literal["sqs"]
    queue_url: HttpUrl
    region: Annotated[str, Field(pattern=AWS_REGION, max_length=32)] | None = None
    endpoint_url: HttpUrl | None = None
    include_in_flight: bool = True
    timeout_s: ReadSeconds = 5.0


class HttpJsonSource(Strict):
    type: Literal["http_json"]
    url: HttpUrl
    path: str  # dotted path to the number, e.g. "queues.imagegen.depth"
    headers: Headers = Field(default_factory=dict)
    token_env: EnvName | None = None
    timeout_s: ReadSeconds = 5.0


SourceConfig = Annotated[
    StaticSource | FileSource | PrometheusSource | RedisSource | RabbitMQSource | SqsSource | HttpJsonSource,
    Field(discriminator="type"),
]
