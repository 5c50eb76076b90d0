"""The `[fleet]`, `[budget]` and `[providers.*]` sections."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from fleet.config.base import (
    AWS_REGION,
    MAX_MACHINES,
    NAME_PATTERN,
    CapUsd,
    EnvName,
    HttpUrl,
    NonNegWindowSeconds,
    PriceUsd,
    ReadSeconds,
    RetentionDays,
    Strict,
    TickSeconds,
)


class FleetSection(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    database_url: str = "sqlite:///fleet.db"
    tick_seconds: TickSeconds = 15.0
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: no HTTP endpoint
    lease_seconds: TickSeconds = 60.0  # leader lease when several replicas share a database
    decisions_retention_days: RetentionDays = 30.0  # older decision rows are pruned (audit, not billing)

    @field_validator("database_url")
    @classmethod
    def _a_store_fleet_runs_on(cls, url: str) -> str:
        # the store is tested on SQLite and PostgreSQL only; a driver is checked by `fleet check`
        scheme = url.partition("://")[0] if "://" in url else ""
        backend = scheme.partition("+")[0]
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"fleet's store runs on SQLite (sqlite:///fleet.db) or PostgreSQL "
                             f"(postgresql+psycopg://user@host/db), not {scheme or url[:40]!r}")
        if any(c in url for c in "\r\n\0"):
            raise ValueError("holds a line break or a NUL character")
        return url

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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BudgetSection(Strict):
    max_hourly_usd: CapUsd | None = None
    # a cap below the current burn (lowered, or a price rose): "shed" removes machines in the
    # pool's removal order until the burn fits; "warn" keeps them and only buys nothing more
    over_cap: Literal["shed", "warn"] = "shed"


class SimulatedProviderConfig(Strict):
    quota_machines: int | None = Field(default=None, ge=0, le=100 * MAX_MACHINES)
    capacity_error_rate: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=-(2**63), le=2**63 - 1)
    prices: dict[str, PriceUsd] = Field(default_factory=dict)  # size → $/h, over the built-in table


class DigitalOceanProviderConfig(Strict):
    token_env: EnvName = "DIGITALOCEAN_TOKEN"
    api_url: HttpUrl = "https://api.digitalocean.com"
    timeout_s: ReadSeconds = 30.0
    capacity_miss_ttl_s: NonNegWindowSeconds = 300.0

    @field_validator("api_url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        # providers/digitalocean.py sends the token over plain http only to this machine
        parts = urlsplit(url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            raise ValueError(f"{url[:80]!r}: plain http is only allowed to a loopback host (the token is sent "
                             "in its headers); use https")
        return url


class AwsProviderConfig(Strict):
    region: str = Field(pattern=AWS_REGION, max_length=32)
    endpoint_url: HttpUrl | None = None
    capacity_miss_ttl_s: NonNegWindowSeconds = 300.0


class ProvidersSection(Strict):
    simulated: SimulatedProviderConfig | None = None
    digitalocean: DigitalOceanProviderConfig | None = None
    aws: AwsProviderConfig | None = None

    def configured(self) -> list[str]:
        return [name for name in ("simulated", "digitalocean", "aws") if getattr(self, name) is not None]

