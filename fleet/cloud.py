"""From config to provider adapters and launch targets (the controller's wiring).

Adapters are imported lazily so a simulated-only fleet never imports boto3 or pydo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fleet.config import Config, PoolConfig
from providers.base import PoolTarget, Provider

USER_DATA_LIMIT = 64 * 1024


class WiringError(Exception):
    """A provider cannot be built (missing token, unreadable user-data): nothing is created."""


def simulated_state_path(config: Config) -> Path:
    """Where the simulated cloud keeps its state: next to a SQLite database, else next to the config."""
    url = config.fleet.database_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///"):] + ".simcloud.json")
    base = config.source_path.parent if config.source_path else Path.cwd()
    return base / f"{config.fleet.name}.simcloud.json"


def build_providers(config: Config, clock: Callable[[], float]) -> dict[str, Provider]:
    out: dict[str, Provider] = {}
    needed = {p.provider for p in config.pools}
    sim = config.providers.simulated
    if sim is not None and "simulated" in needed:
        from providers.simulated import SimulatedCloud

        out["simulated"] = SimulatedCloud(state_path=simulated_state_path(config), clock=clock,
                                          quota_machines=sim.quota_machines,
                                          capacity_error_rate=sim.capacity_error_rate, seed=sim.seed,
                                          prices=sim.prices)
    do = config.providers.digitalocean
    if do is not None and "digitalocean" in needed:
        token = os.environ.get(do.token_env, "").strip()
        if not token:
            raise WiringError(f"providers.digitalocean.token_env: the environment variable {do.token_env} "
                              "is not set (the DigitalOcean API token is read from it, never from the file)")
        from providers.digitalocean import DigitalOceanProvider

        out["digitalocean"] = DigitalOceanProvider(token=token, api_url=do.api_url, timeout_s=do.timeout_s,
                                                   capacity_miss_ttl_s=do.capacity_miss_ttl_s, clock=clock)
    aws = config.providers.aws
    if aws is not None and "aws" in needed:
        from providers.aws import AwsProvider

        # Every region an AWS pool names: the adapter lists them all, launches where each pool says.
        regions = tuple(dict.fromkeys(r for p in config.pools if p.provider == "aws" for r in p.region))
        out["aws"] = AwsProvider(region=aws.region, regions=regions, endpoint_url=aws.endpoint_url,
                                 capacity_miss_ttl_s=aws.capacity_miss_ttl_s, clock=clock)
    return out


def read_user_data(pool: PoolConfig) -> str | None:
    if pool.user_data_file is None:
        return None
    try:
        raw = pool.user_data_file.read_bytes()
    except OSError as exc:
        raise WiringError(f"pools.{pool.name}.user_data_file: cannot read {pool.user_data_file}: "
                          f"{exc.strerror or exc}") from exc
    if len(raw) > USER_DATA_LIMIT:
        raise WiringError(f"pools.{pool.name}.user_data_file: {pool.user_data_file} is {len(raw)} bytes; "
                          f"the limit is {USER_DATA_LIMIT} (64 KiB)")
    return raw.decode("utf-8", errors="strict")


def launch_target(config: Config, pool: PoolConfig) -> PoolTarget:
    options = {
        "boot_seconds": pool.boot_seconds,
        "image": pool.image,
        "ssh_keys": pool.ssh_keys,
        "user_data": read_user_data(pool),
        "vpc_uuid": pool.vpc_uuid,
        "subnets": pool.subnets,
        "launch_template": pool.launch_template,
        "security_groups": pool.security_groups,
        "key_name": pool.key_name,
        "iam_instance_profile": pool.iam_instance_profile,
        "capacity": pool.capacity,
        "spot_fallback": pool.spot_fallback,
    }
    return PoolTarget(fleet=config.fleet.name, pool=pool.name, sizes=pool.size, regions=pool.region,
                      options=options)


def size_price(pool: PoolConfig, provider: Provider, size: str, region: str | None) -> float | None:
    """The pool's own override, else the provider's price."""
    override = pool.price_override(size)
    if override is not None:
        return override
    try:
        return provider.price(size, region)
    except Exception:  # a price lookup failure must not crash the tick; unknown price blocks launches
        return None


def unpriced(pool: PoolConfig, provider: Provider) -> tuple[str, ...]:
    """The launch candidates ("size" or "size in region") whose price is not known."""
    return tuple(size if region is None else f"{size} in {region}"
                 for size in pool.size for region in (pool.region or (None,))
                 if size_price(pool, provider, size, region) is None)


def launch_price(pool: PoolConfig, provider: Provider) -> float | None:
    """The price the budget charges a new machine: the dearest candidate (the adapter may fall
    back to any of them), or None when any candidate's price is unknown."""
    prices = []
    for size in pool.size:
        regions = pool.region or (None,)
        for region in regions:
            price = size_price(pool, provider, size, region)
            if price is None:
                return None
            prices.append(price)
    return max(prices) if prices else None


def price_problems(config: Config, providers: dict[str, Provider]) -> list[str]:
    capped = config.budget.max_hourly_usd is not None
    problems = []
    for i, pool in enumerate(config.pools):
        provider = providers.get(pool.provider)
        # A local price table (`capabilities.local_prices`): an unknown price there is a config
        # error, caught at start.  Prices read from an API at run time (DigitalOcean's) are not
        # known yet; an unknown one refuses the launch instead.
        if provider is None or not provider.capabilities.local_prices:
            continue
        if not (capped or pool.max_hourly_usd is not None):
            continue
        unknown = [s for s in pool.size if size_price(pool, provider, s, None) is None]
        if unknown:
            problems.append(f"pools[{i}].price_hourly_usd: no price known for {', '.join(unknown)} and a budget "
                            "cap is set: give price_hourly_usd for it")
    return problems
