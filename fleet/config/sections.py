"""The `[fleet]`, `[budget]` and `[providers.*]` sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from fleet.config.base import NAME_PATTERN, NonNegFloat, PositiveFloat, Strict


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

