"""EC2 GPU instances through boto3.  See providers/base.py for the contract.

- Create: one `run_instances` per candidate (MinCount 1, MaxCount n), counting what
  really launched.  Candidates are each instance type × each subnet, in order; with
  `capacity = "spot"` and `spot_fallback = "on-demand"` the candidates are retried
  on-demand when spot fails everywhere.  Capacity misses are remembered for
  `capacity_miss_ttl_s` so the next ticks skip them.  The ClientToken is derived
  from the action's token and the candidate, so a retried action sends the same one.
- The EC2 client never retries by itself (`total_max_attempts=1`): botocore would
  otherwise retry capacity errors (5xx) behind our back.  Throttling is retried here
  with bounded backoff through the injected `sleep`; reads and terminations also
  retry 5xx/connection errors; a launch does not (the next tick adopts by token).
- Quotas: EC2 vCPU quotas come from Service Quotas behind `QuotaSource`; usage is
  the account's pending/running instances in the quota's family (all of them, not
  only ours: the quota is the account's).
- The endpoint: `endpoint_url` when given, else botocore's own configuration
  (it honours `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_EC2` natively).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    POOL_TAG,
    TOKEN_TAG,
    AuthError,
    BillingRule,
    CapacityError,
    CapacityMemory,
    DestroyFailure,
    Headroom,
    InstanceStatus,
    InvalidRequest,
    LaunchResult,
    LaunchSpec,
    PoolTarget,
    ProviderError,
    ProviderInstance,
    QuotaExceeded,
    RateLimited,
    TransientError,
)

T = TypeVar("T")

USAGE_REUSE_S = 5.0  # the account's instance list for quota usage is reused this long (one tick)

# On-demand Linux $/h in us-east-1, as gathered in May 2026 (../shared/reference/providers.md
# 2.3, marked UNCONFIRMED there).  Used for every region: a pool's `price_hourly_usd`
# overrides it (the controller applies that), and spot machines are priced at this
# on-demand ceiling so budgets stay conservative.
PRICE_TABLE: Mapping[str, float] = {
    "g5.xlarge": 1.006,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6e.xlarge": 1.861,
    "p4d.24xlarge": 21.96,
    "p5.48xlarge": 55.04,
}


@dataclass(frozen=True)
class QuotaFamily:
    name: str
    on_demand: str  # Service Quotas codes (vCPUs) for running instances of the family
    spot: str


_G_VT = QuotaFamily("G and VT", "L-DB2E81BA", "L-3819A6DF")
_P = QuotaFamily("P", "L-417A185B", "L-7212CCBC")
_STANDARD = QuotaFamily("Standard (A, C, D, H, I, M, R, T, Z)", "L-1216C47A", "L-34B43A08")
_INF = QuotaFamily("Inf", "L-1945791B", "L-B5D1601B")
_X = QuotaFamily("X", "L-7295265B", "L-E3A00192")
_TRN = QuotaFamily("Trn", "L-2C3B7624", "L-5480EFD2")
# instance-type prefix (letters before the generation digit) → its vCPU quota family
QUOTA_FAMILIES: Mapping[str, QuotaFamily] = {
    "g": _G_VT, "vt": _G_VT, "p": _P, "inf": _INF, "x": _X, "trn": _TRN,
    **{letter: _STANDARD for letter in ("a", "c", "d", "h", "i", "m", "r", "t", "z")},
}


def quota_family(instance_type: str) -> QuotaFamily | None:
    match = re.match(r"([a-z]+?)\d", instance_type)
    return QUOTA_FAMILIES.get(match.group(1)) if match else None


CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity",
    "Unsupported", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow", "UnfulfillableCapacity",
    "InsufficientCapacity",
})
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded"})
THROTTLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "SlowDown", "EC2ThrottledException",
    "PriorRequestNotComplete",
})
AUTH_CODES = frozenset({
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "RequestExpired", "AccessDenied", "AccessDeniedException", "SignatureDoesNotMatch",
    "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException",
    "InvalidAccessKeyId", "OptInRequired", "Blocked",
})
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
# EC2 state code (& 0xFF) → protocol status; 48 terminated is never listed
STATUS_BY_CODE: Mapping[int, InstanceStatus] = {
    0: InstanceStatus.BOOTING, 16: InstanceStatus.READY, 32: InstanceStatus.TERMINATING,
    64: InstanceStatus.TERMINATING, 80: InstanceStatus.STOPPED,
}
SPOT_OPTIONS = {"MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit before base64
RETRY_ATTEMPTS = 4  # 1 call + 3 retries, waits 1 s, 2 s, 4 s: bounded at 7 s of backoff
RETRY_MAX_WAIT_S = 20.0
TERMINATE_BATCH = 500


# ---------------------------------------------------------------- errors


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def classify(err: Exception, doing: str) -> ProviderError:
    """One SDK error → the taxonomy of providers/base.py; `doing` names the operation."""
    if isinstance(err, ProviderError):
        return err
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return AuthError(f"{doing}: no usable AWS credentials (the standard chain: environment, "
                         f"profile, instance role): {type(err).__name__}")
    if isinstance(err, ParamValidationError):
        return InvalidRequest(f"{doing}: invalid request: {err}")
    if isinstance(err, ClientError):
        code, status = _code(err), _status(err)
        message = str(err.response.get("Error", {}).get("Message", ""))[:300]
        text = f"{doing}: {code or status}: {message}"
        if code in CAPACITY_CODES:
            return CapacityError(text)
        if code in QUOTA_CODES:
            return QuotaExceeded(text)
        if code in THROTTLE_CODES or status == 429:
            return RateLimited(text)
        if code in AUTH_CODES or status in (401, 403):
            return AuthError(f"{doing}: AWS refused the credentials or permissions ({code or status}); "
                             f"check the credential chain and the IAM policy: {message}")
        if status >= 500:
            return TransientError(text)
        return InvalidRequest(text)
    if isinstance(err, BotoCoreError):  # connection refused/closed, timeouts
        return TransientError(f"{doing}: {type(err).__name__}: {err}")
    return TransientError(f"{doing}: {type(err).__name__}: {err}")


def _error_code(err: BaseException | None) -> str:
    cause = err.__cause__ if err is not None else None
    return _code(cause) if isinstance(cause, ClientError) else type(err).__name__


def _error_message(err: BaseException) -> str:
    cause = err.__cause__
    return str(cause.response.get("Error", {}).get("Message", "")) if isinstance(cause, ClientError) else ""


# ---------------------------------------------------------------- quotas


class QuotaUnavailable(Exception):
    """The quota API was denied, throttled or unreachable."""


class QuotaSource(Protocol):
    def vcpu_quota(self, quota_code: str) -> float | None:
        """The applied (else default) value of an EC2 vCPU quota; None when it has none.

        Raises QuotaUnavailable when the quota API is denied or unavailable.
        """


class ServiceQuotasSource:
    """QuotaSource on the boto3 `service-quotas` client (ServiceCode "ec2")."""

    def __init__(self, session: boto3.Session, region: str, endpoint_url: str | None = None):
        kwargs: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
        self.client = session.client("service-quotas", config=_client_config(region), **kwargs)

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
            detail = _code(err) if isinstance(err, ClientError) else type(err).__name__
            raise QuotaUnavailable(f"reading EC2 quota {quota_code}: {detail}") from err
        value = quota.get("Value")
        return float(value) if value is not None else None


def _client_config(region: str) -> Config:
    # No botocore retries: ours are explicit, bounded, and never re-send a launch.
    return Config(region_name=region, retries={"mode": "standard", "total_max_attempts": 1},
                  connect_timeout=10, read_timeout=30)


# ---------------------------------------------------------------- the adapter


class AwsProvider:
    name = "aws"
    billing = BillingRule(min_seconds=60.0)  # per second, 60 s minimum
    page_size = 200  # describe_instances page size (tests lower it to cross pages)

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        capacity_miss_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        session: boto3.Session | None = None,
        quotas: QuotaSource | None = None,
    ):
        self.region = region
        self._clock = clock
        self._sleep = sleep
        session = session or boto3.Session(region_name=region)
        kwargs: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
        self.ec2 = session.client("ec2", config=_client_config(region), **kwargs)
        self.quotas: QuotaSource = quotas or ServiceQuotasSource(session, region, endpoint_url)
        self._misses = CapacityMemory(capacity_miss_ttl_s, clock)  # (market, instance type, subnet)
        self._account_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._vcpus: dict[str, int] = {}  # instance type → default vCPUs (static facts)

    # ------------------------------------------------------------ calls with retries

    def _call(self, doing: str, fn: Callable[[], T], *, launch: bool = False) -> T:
        """Run `fn`, classify its errors; retry throttling (and, unless launching, 5xx)."""
        retryable: tuple[type[ProviderError], ...] = (RateLimited,) if launch else (RateLimited, TransientError)

        def attempt() -> T:
            try:
                return fn()
            except ProviderError:
                raise
            except Exception as err:  # classified once, here
                raise classify(err, doing) from err

        retrying = Retrying(retry=retry_if_exception_type(retryable), stop=stop_after_attempt(RETRY_ATTEMPTS),
                            wait=_backoff, sleep=self._sleep, reraise=True)
        return retrying(attempt)

    # ------------------------------------------------------------ list

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]},
                   {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        found = self._describe(f"listing EC2 instances of fleet {fleet!r}", filters)
        out = []
        for raw in found:
            view = self._view(raw)
            # state filter is the server's; re-check so a terminated one never leaks through
            if view is not None and view.tags.get(FLEET_TAG) == fleet:
                out.append(view)
        return out

    def _describe(self, doing: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def all_pages() -> list[dict[str, Any]]:
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": self.page_size})
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        return self._call(doing, all_pages)

    def _view(self, raw: Mapping[str, Any]) -> ProviderInstance | None:
        state = raw.get("State", {})
        status = STATUS_BY_CODE.get(int(state.get("Code", 48)) & 0xFF)
        if status is None:
            return None
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        instance_type = raw.get("InstanceType", "")
        return ProviderInstance(
            id=raw["InstanceId"], pool=tags.get(POOL_TAG, ""), size=instance_type,
            region=raw.get("Placement", {}).get("AvailabilityZone", self.region), status=status,
            created_at=raw.get("LaunchTime"), token=tags.get(TOKEN_TAG), name=tags.get("Name", ""),
            spot=raw.get("InstanceLifecycle") == "spot", price_hourly_usd=self.price(instance_type),
            tags=tags, private_ip=raw.get("PrivateIpAddress") or None, public_ip=raw.get("PublicIpAddress") or None,
            draining=DRAINING_TAG in tags,
        )

    # ------------------------------------------------------------ create

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self._account_cache = None  # usage changes now
        target = spec.target
        base = _launch_params(target)
        opts = target.options
        subnets: tuple[str | None, ...] = tuple(opts.get("subnets") or ()) or (None,)
        capacity = opts.get("capacity") or "on-demand"
        markets = [capacity]
        if capacity == "spot" and (opts.get("spot_fallback") or "none") == "on-demand":
            markets.append("on-demand")
        notes: list[str] = []
        last_error: ProviderError | None = None
        only_quota = False
        resumed = _candidate_of(spec.resume, markets, target.sizes, subnets)
        if resumed is not None:
            # The lost call under this token went there last: EC2 dedupes on its ClientToken and
            # answers with what it made; another candidate first would launch a second set.
            market, size, subnet = resumed
            where = f"{size} {market} in {subnet or 'the default subnet'}"
            try:
                made = self._launch(spec, base, market, size, subnet)
                if made:
                    return LaunchResult(instances=tuple(made), size=size, region=made[0].region,
                                        notes=(f"{where}: retried where the lost call went",))
            except (CapacityError, QuotaExceeded) as err:
                self._misses.remember((market, size, subnet))
                notes.append(f"{where}: retried where the lost call went: {_error_code(err)}")
        for market in markets:
            if market != markets[0]:
                notes.append("spot: no capacity or quota in any candidate, falling back to on-demand")
            quota_blocked: set[str] = set()  # quota family names refused in this market
            only_quota = True
            for size in target.sizes:
                family = quota_family(size)
                if family is not None and family.name in quota_blocked:
                    notes.append(f"{size} {market}: skipped, {family.name} vCPU quota already refused")
                    continue
                for subnet in subnets:
                    where = f"{size} {market} in {subnet or 'the default subnet'}"
                    if self._misses.age((market, size, subnet)) is not None:
                        notes.append(f"{where}: skipped, capacity miss remembered")
                        only_quota = False
                        continue
                    try:
                        made = self._launch(spec, base, market, size, subnet)
                    except CapacityError as err:
                        self._misses.remember((market, size, subnet))
                        notes.append(f"{where}: no capacity ({_error_code(err)})")
                        last_error, only_quota = err, False
                        continue
                    except QuotaExceeded as err:
                        notes.append(f"{where}: quota ({_error_code(err)})")
                        last_error = err
                        if family is not None:
                            quota_blocked.add(family.name)
                        break  # the quota is per family, not per subnet
                    if not made:
                        notes.append(f"{where}: launched nothing")
                        only_quota = False
                        continue
                    return LaunchResult(instances=tuple(made), size=size, region=made[0].region,
                                        notes=tuple(notes))
        what = f"launching {spec.count} × {'/'.join(target.sizes)} for pool {target.pool!r}"
        message = f"{what}: no candidate launched anything: " + "; ".join(notes)
        if only_quota and isinstance(last_error, QuotaExceeded):
            raise QuotaExceeded(message) from last_error
        raise CapacityError(message) from last_error

    def _launch(self, spec: LaunchSpec, base: Mapping[str, Any], market: str, size: str,
                subnet: str | None) -> list[ProviderInstance]:
        target = spec.target
        tags = [{"Key": FLEET_TAG, "Value": target.fleet}, {"Key": POOL_TAG, "Value": target.pool},
                {"Key": TOKEN_TAG, "Value": spec.token}, {"Key": "Name", "Value": f"{target.pool}-{spec.token}"}]
        params: dict[str, Any] = {
            **base, "InstanceType": size, "MinCount": 1, "MaxCount": spec.count,
            "ClientToken": client_token(spec.token, market, size, subnet),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        if subnet is not None:
            params["SubnetId"] = subnet
        if market == "spot":
            params["InstanceMarketOptions"] = SPOT_OPTIONS
        if spec.on_attempt is not None:
            spec.on_attempt(candidate_key(market, size, subnet))
        doing = f"launching {spec.count} × {size} ({market}) in {subnet or 'the default subnet'}"
        resp = self._call(doing, lambda: self.ec2.run_instances(**params), launch=True)
        sent = {t["Key"]: t["Value"] for t in tags}
        made = []
        for raw in resp.get("Instances", []):
            # the response may omit tags: what we sent is on the instance
            raw = {**raw, "Tags": [{"Key": k, "Value": v} for k, v in
                                   {**sent, **{t["Key"]: t["Value"] for t in raw.get("Tags", [])}}.items()]}
            view = self._view(raw)
            if view is not None:
                made.append(view)
        return made

    # ------------------------------------------------------------ destroy

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        failures: list[DestroyFailure] = []
        for start in range(0, len(ids), TERMINATE_BATCH):
            failures += self._terminate(list(dict.fromkeys(ids[start:start + TERMINATE_BATCH])))
        return failures

    def _terminate(self, ids: list[str]) -> list[DestroyFailure]:
        """Terminate `ids`; unknown ids count as destroyed and never fail the others."""
        pending = list(ids)
        while pending:
            doing = f"terminating EC2 instances {', '.join(pending)}"
            batch = list(pending)
            try:
                self._call(doing, lambda b=batch: self.ec2.terminate_instances(InstanceIds=b))
                return []
            except ProviderError as err:
                code = _error_code(err)
                if code not in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                    if len(pending) > 1 and not isinstance(err, (AuthError, RateLimited, TransientError)):
                        # one instance EC2 refuses (termination protection, OperationNotPermitted)
                        # fails the whole call: ask for each, so the others stop billing
                        return self._terminate_each(pending)
                    return [DestroyFailure(i, err) for i in pending]
                # EC2 names the unknown ids in the message: drop them and try the rest
                named = set(re.split(r"[\s'\",:]+", _error_message(err)))
                unknown = {i for i in pending if i in named}
                if not unknown or len(pending) == 1:
                    return self._terminate_each(pending) if len(pending) > 1 else []
                pending = [i for i in pending if i not in unknown]
        return []

    def _terminate_each(self, ids: list[str]) -> list[DestroyFailure]:
        return self._each_instance(ids, "terminating EC2 instance {}",
                                   lambda i: self.ec2.terminate_instances(InstanceIds=[i]))

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Tag each instance `fleet-draining=true`, one call each (drains are few, and an
        unknown id fails a whole CreateTags call); a gone instance counts as marked."""
        return self._each_instance(ids, f"tagging EC2 instance {{}} {DRAINING_TAG}", lambda i: self.ec2.create_tags(
            Resources=[i], Tags=[{"Key": DRAINING_TAG, "Value": "true"}]))

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        return self._each_instance(ids, f"untagging EC2 instance {{}} {DRAINING_TAG}", lambda i: self.ec2.delete_tags(
            Resources=[i], Tags=[{"Key": DRAINING_TAG}]))

    def _each_instance(self, ids: Sequence[str], doing: str, call: Callable[[str], Any]) -> list[DestroyFailure]:
        """`call` for each id, one request each; the ids that failed, with why.  An unknown id is
        no failure: the instance is gone."""
        failures = []
        for instance_id in dict.fromkeys(ids):
            try:
                self._call(doing.format(instance_id), lambda i=instance_id: call(i))
            except ProviderError as err:
                if _error_code(err) not in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                    failures.append(DestroyFailure(instance_id, err))
        return failures

    # ------------------------------------------------------------ quota headroom

    def headroom(self, target: PoolTarget) -> Headroom:
        """Machines the account's vCPU quotas still admit for this pool.

        Per candidate type: floor((quota - vCPUs in use in its family) / its vCPUs),
        summed over the markets the pool may launch in (spot, then on-demand when it
        falls back).  The pool's headroom is the minimum over its candidates, so
        whichever candidate `create` lands on, the quota admits that many.
        """
        opts = target.options
        markets = [opts.get("capacity") or "on-demand"]
        if markets[0] == "spot" and (opts.get("spot_fallback") or "none") == "on-demand":
            markets.append("on-demand")
        families = {s: quota_family(s) for s in target.sizes}
        known = [s for s in target.sizes if families[s] is not None]
        if not known:
            return Headroom(None, f"no known vCPU quota for {', '.join(target.sizes)}: the pool's max applies")
        try:
            vcpus = self._instance_vcpus(known)
            usage = self._usage({f.name for f in families.values() if f is not None})
        except ProviderError as err:
            return Headroom(None, f"vCPU usage unknown ({err}): the pool's max applies")
        values: dict[str, float | None] = {}
        per_size: list[tuple[int, str]] = []
        for size in known:
            family = families[size]
            assert family is not None
            machines = 0
            parts = []
            for market in markets:
                code = family.spot if market == "spot" else family.on_demand
                if code not in values:
                    try:
                        values[code] = self.quotas.vcpu_quota(code)
                    except QuotaUnavailable as err:
                        return Headroom(None, f"vCPU quota unavailable ({err}): the pool's max applies")
                quota = values[code]
                if quota is None:
                    return Headroom(None, f"vCPU quota {code} has no value: the pool's max applies")
                used = usage.get((family.name, market), 0)
                room = max(0, math.floor((quota - used) / vcpus[size]))
                machines += room
                parts.append(f"{family.name} {market} quota {code} {quota:g} vCPU, {used} in use → {room}")
            per_size.append((machines, f"{size} ({vcpus[size]} vCPU): " + ", ".join(parts)))
        machines, why = min(per_size, key=lambda p: p[0])
        unknown = [s for s in target.sizes if families[s] is None]
        extra = f"; no known quota for {', '.join(unknown)}" if unknown else ""
        return Headroom(machines, f"{why}{extra}")

    def _account_instances(self) -> list[dict[str, Any]]:
        """The account's pending/running instances, shared by the pools of one tick."""
        cached = self._account_cache
        if cached is not None and self._clock() - cached[0] < USAGE_REUSE_S:
            return cached[1]
        raws = self._describe(f"reading EC2 vCPU usage in {self.region}",
                              [{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        self._account_cache = (self._clock(), raws)
        return raws

    def _usage(self, family_names: set[str]) -> dict[tuple[str, str], int]:
        """vCPUs of the account's pending/running instances, by (family, market)."""
        raws = self._account_instances()
        relevant = []
        for raw in raws:
            family = quota_family(raw.get("InstanceType", ""))
            if family is not None and family.name in family_names:
                relevant.append((raw, family))
        vcpus = self._instance_vcpus([raw["InstanceType"] for raw, _ in relevant])
        usage: dict[tuple[str, str], int] = {}
        for raw, family in relevant:
            # lifecycle filter is client-side: spot and on-demand have separate quotas
            market = "spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand"
            usage[(family.name, market)] = usage.get((family.name, market), 0) + vcpus[raw["InstanceType"]]
        return usage

    def _instance_vcpus(self, types: Iterable[str]) -> dict[str, int]:
        missing = sorted(set(types) - set(self._vcpus))
        for start in range(0, len(missing), 100):
            chunk = missing[start:start + 100]
            resp = self._call(f"describing EC2 instance types {', '.join(chunk)}",
                              lambda c=chunk: self.ec2.describe_instance_types(InstanceTypes=c))
            for item in resp.get("InstanceTypes", []):
                self._vcpus[item["InstanceType"]] = int(item["VCpuInfo"]["DefaultVCpus"])
        absent = [t for t in set(types) if t not in self._vcpus]
        if absent:
            raise InvalidRequest(f"EC2 does not describe instance types {', '.join(sorted(absent))}")
        return {t: self._vcpus[t] for t in set(types)}

    # ------------------------------------------------------------ price

    def price(self, size: str, region: str | None = None) -> float | None:
        return PRICE_TABLE.get(size)


# ---------------------------------------------------------------- helpers


def candidate_key(market: str, size: str, subnet: str | None) -> str:
    """A launch candidate as `LaunchSpec.resume` names it."""
    return f"{market}|{size}|{subnet or ''}"


def _candidate_of(key: str | None, markets: Sequence[str], sizes: Sequence[str],
                  subnets: Sequence[str | None]) -> tuple[str, str, str | None] | None:
    """The candidate `key` names, if it is still one of this pool's."""
    if not key or key.count("|") != 2:
        return None
    market, size, subnet = key.split("|")
    found = (market, size, subnet or None)
    return found if market in markets and size in sizes and found[2] in subnets else None


def client_token(token: str, market: str, size: str, subnet: str | None) -> str:
    """A deterministic EC2 ClientToken (≤ 64 ASCII chars) for one action and candidate.

    Different per candidate: EC2 refuses a token reused with other parameters.
    """
    digest = hashlib.sha256(f"{token}|{market}|{size}|{subnet or ''}".encode()).hexdigest()
    return f"fleet-{digest[:48]}"


def _launch_params(target: PoolTarget) -> dict[str, Any]:
    """The candidate-independent run_instances parameters, validated up front."""
    opts = target.options
    params: dict[str, Any] = {}
    template = opts.get("launch_template")
    if template:
        key = "LaunchTemplateId" if str(template).startswith("lt-") else "LaunchTemplateName"
        params["LaunchTemplate"] = {key: template, "Version": "$Default"}
    if opts.get("image"):
        params["ImageId"] = opts["image"]
    if not params:
        raise InvalidRequest(f"pool {target.pool!r}: set `launch_template` or `image`")
    groups = tuple(opts.get("security_groups") or ())
    ids = [g for g in groups if g.startswith("sg-")]
    names = [g for g in groups if not g.startswith("sg-")]
    if ids:
        params["SecurityGroupIds"] = ids
    if names:  # group names only work in the default VPC, without a subnet
        params["SecurityGroups"] = names
    if opts.get("key_name"):
        params["KeyName"] = opts["key_name"]
    profile = opts.get("iam_instance_profile")
    if profile:
        params["IamInstanceProfile"] = {"Arn": profile} if str(profile).startswith("arn:") else {"Name": profile}
    user_data = opts.get("user_data")
    if user_data:
        if len(user_data.encode()) > MAX_USER_DATA_BYTES:
            raise InvalidRequest(f"pool {target.pool!r}: user data is {len(user_data.encode())} bytes, "
                                 f"EC2 allows {MAX_USER_DATA_BYTES}")
        params["UserData"] = user_data  # boto3 base64-encodes it
    return params


def _backoff(state: RetryCallState) -> float:
    err = state.outcome.exception() if state.outcome else None
    hinted = getattr(err, "retry_after_s", None)
    if hinted:
        return min(float(hinted), RETRY_MAX_WAIT_S)
    return min(2.0 ** (state.attempt_number - 1), RETRY_MAX_WAIT_S)
