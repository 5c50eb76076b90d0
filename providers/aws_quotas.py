"""EC2 vCPU quotas: where they are read (Service Quotas) and how a region's room is counted."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from providers.aws_catalog import QuotaFamily
from providers.aws_errors import error_code


class QuotaUnavailable(Exception):
    """The quota API was denied, throttled or unreachable."""


class HeadroomUnknown(Exception):
    """The room cannot be counted; the message says why (the pool's max applies)."""


class QuotaSource(Protocol):
    def vcpu_quota(self, quota_code: str) -> float | None:
        """The applied (else default) value of an EC2 vCPU quota; None when it has none.

        Raises QuotaUnavailable when the quota API is denied or unavailable.
        """


def client_config(region: str) -> Config:
    """Every client of the adapter: no botocore retries (ours are explicit, bounded, and never
    re-send a launch), bounded timeouts."""
    return Config(region_name=region, retries={"mode": "standard", "total_max_attempts": 1},
                  connect_timeout=10, read_timeout=30)


class ServiceQuotasSource:
    """QuotaSource on the boto3 `service-quotas` client (ServiceCode "ec2") of one region."""

    def __init__(self, session: boto3.Session, region: str, endpoint_url: str | None = None):
        kwargs: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
        self.client = session.client("service-quotas", config=client_config(region), **kwargs)

    def vcpu_quota(self, quota_code: str) -> float | None:
        try:
            try:
                quota = self.client.get_service_quota(ServiceCode="ec2", QuotaCode=quota_code)["Quota"]
            except self.client.exceptions.NoSuchResourceException:
                # no applied value: the AWS default is the quota
                quota = self.client.get_aws_default_service_quota(ServiceCode="ec2",
                                                                  QuotaCode=quota_code)["Quota"]
        except self.client.exceptions.NoSuchResourceException:
            return None
        except (ClientError, BotoCoreError) as err:
            detail = error_code(err) if isinstance(err, ClientError) else type(err).__name__
            raise QuotaUnavailable(f"reading EC2 quota {quota_code}: {detail}") from err
        value = quota.get("Value")
        return float(value) if value is not None else None


class QuotaReader:
    """One headroom question's quota values, each code read once."""

    def __init__(self, source: QuotaSource):
        self._source = source
        self._values: dict[str, float | None] = {}

    def value(self, code: str) -> float:
        if code not in self._values:
            try:
                self._values[code] = self._source.vcpu_quota(code)
            except QuotaUnavailable as err:
                raise HeadroomUnknown(f"vCPU quota unavailable ({err}): the pool's max applies") from err
        quota = self._values[code]
        if quota is None:
            raise HeadroomUnknown(f"vCPU quota {code} has no value: the pool's max applies")
        return quota


def region_room(sizes: Sequence[str], families: Mapping[str, QuotaFamily], vcpus: Mapping[str, int],
                usage: Mapping[tuple[str, str], int], quotas: QuotaReader, markets: Sequence[str],
                where: str = "") -> tuple[int, str]:
    """(machines, why) the quotas of one region admit for the pool, whichever size it lands on.

    Per size: floor((quota - vCPUs in use in its family) / its vCPUs), summed over the markets
    the pool may launch in; the region's room is the minimum over sizes.
    """
    per_size: list[tuple[int, str]] = []
    for size in sizes:
        family = families[size]
        machines, parts = 0, []
        for market in markets:
            code = family.code(market)
            quota = quotas.value(code)
            used = usage.get((family.name, market), 0)
            room = max(0, math.floor((quota - used) / vcpus[size]))
            machines += room
            parts.append(f"{family.name} {market} quota {code} {quota:g} vCPU, {used} in use → {room}")
        per_size.append((machines, f"{size} ({vcpus[size]} vCPU){where}: " + ", ".join(parts)))
    return min(per_size, key=lambda p: p[0])


def family_usage(raws: Sequence[Mapping[str, Any]], family_of: Callable[[str], QuotaFamily | None],
                 family_names: set[str], vcpus: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """vCPUs of these pending/running instances, by (family, market)."""
    usage: dict[tuple[str, str], int] = {}
    for raw in raws:
        family = family_of(raw.get("InstanceType", ""))
        if family is None or family.name not in family_names:
            continue
        # lifecycle filter is client-side: spot and on-demand have separate quotas
        market = "spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand"
        usage[(family.name, market)] = usage.get((family.name, market), 0) + vcpus[raw["InstanceType"]]
    return usage
