"""EC2 GPU instances through boto3.  See providers/base.py for the contract.

- Regions: one EC2 client per region, made on first use.  A pool's `regions` are where it
  launches (none: the adapter's `region`); a listing covers the adapter's region, the
  `regions` it was built with, and every region it has a client for.
- Create: one `run_instances` per candidate (MinCount 1, MaxCount n), counting what really
  launched.  Candidates are market × instance type × region × subnet, in order (on-demand
  after spot when `capacity = "spot"` falls back), walked by `providers.base.CapacityWalk`.
  The ClientToken is derived from the action's token and the candidate, so a retried
  action sends the same one.
- The EC2 client never retries by itself (`total_max_attempts=1`): botocore would otherwise
  retry capacity errors (5xx) behind our back.  Throttling is retried here with bounded
  backoff through the injected `sleep`; reads and terminations also retry transient errors;
  a launch does not (the next tick adopts by token).  Only SDK errors are classified
  (providers/aws_errors.py); anything else propagates.
- Quotas: EC2 vCPU quotas (per region) come from Service Quotas behind `QuotaSource`; usage
  is the account's pending/running instances in the quota's family (the quota is the account's).
- The endpoint: `endpoint_url` when given, else botocore's own configuration
  (it honours `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_EC2` natively).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import boto3
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from providers.aws_catalog import PRICE_TABLE, QuotaFamily, quota_family
from providers.aws_errors import GONE_CODES, RETRY_ATTEMPTS, backoff, classify, error_message
from providers.aws_launch import (  # noqa: F401  (re-exported: the tests and the controller's records use them)
    LIVE_STATES,
    Ec2Candidate,
    candidate_key,
    candidate_of,
    candidate_params,
    client_token,
    instance_view,
    launch_params,
    market_transition,
    markets,
)
from providers.aws_quotas import (  # noqa: F401  (re-exported)
    HeadroomUnknown,
    QuotaReader,
    QuotaSource,
    QuotaUnavailable,
    ServiceQuotasSource,
    client_config,
    family_usage,
    region_room,
)
from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    BillingRule,
    Capabilities,
    CapacityMemory,
    CapacityWalk,
    DestroyFailure,
    ErrorKind,
    Headroom,
    InvalidRequest,
    LaunchResult,
    LaunchSpec,
    PoolTarget,
    ProviderError,
    ProviderInstance,
    RateLimited,
    TransientError,
)

T = TypeVar("T")

USAGE_REUSE_S = 5.0  # the account's instance list for quota usage is reused this long (one tick)
TERMINATE_BATCH = 500
# A whole-batch refusal of one of these kinds fails every id alike: asking for each would too.
BATCH_WIDE = frozenset({ErrorKind.AUTH, ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT})


class AwsProvider:
    name = "aws"
    billing = BillingRule(min_seconds=60.0)  # per second, 60 s minimum
    # EC2 bills a stopped instance's volumes, not its compute.
    capabilities = Capabilities(local_prices=True, quotas=True, spot=True, stop_start=True,
                                idempotent_create=True)
    page_size = 200  # describe_instances page size (tests lower it to cross pages)

    def __init__(
        self,
        *,
        region: str,
        regions: Sequence[str] = (),
        endpoint_url: str | None = None,
        capacity_miss_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        session: boto3.Session | None = None,
        quotas: QuotaSource | None = None,
        quota_sources: Callable[[str], QuotaSource] | None = None,
    ):
        self.region = region
        self._clock = clock
        self._sleep = sleep
        self._session = session or boto3.Session(region_name=region)
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self._regions: list[str] = list(dict.fromkeys([region, *regions]))
        self.ec2 = self.client(region)
        self._quota_factory = quota_sources or (lambda r: ServiceQuotasSource(self._session, r, endpoint_url))
        self._quotas: dict[str, QuotaSource] = {region: quotas or self._quota_factory(region)}
        self.quotas = self._quotas[region]
        self._walk: CapacityWalk[Ec2Candidate] = CapacityWalk(
            CapacityMemory(capacity_miss_ttl_s, clock), where=self._where, quota_key=self._quota_key,
            transition=market_transition)
        self._account_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._vcpus: dict[str, int] = {}  # instance type → default vCPUs (static facts)
        self._region_of: dict[str, str] = {}  # instance id → region, from what was listed or launched

    # ------------------------------------------------------------ regions and calls

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions a listing covers: the default, the configured ones, any with a client."""
        return tuple(dict.fromkeys([*self._regions, *self._clients]))

    def client(self, region: str) -> Any:
        """The EC2 client of `region`, made on first use."""
        if region not in self._clients:
            kwargs: dict[str, Any] = {"endpoint_url": self._endpoint_url} if self._endpoint_url else {}
            self._clients[region] = self._session.client("ec2", config=client_config(region), **kwargs)
        return self._clients[region]

    def _quota_source(self, region: str) -> QuotaSource:
        if region not in self._quotas:
            self._quotas[region] = self._quota_factory(region)
        return self._quotas[region]

    def _call(self, doing: str, fn: Callable[[], T], *, launch: bool = False) -> T:
        """Run `fn`, classify its SDK errors; retry throttling (and, unless launching, transient
        errors).  An exception that is not the SDK's propagates as it is, never retried."""
        retryable: tuple[type[ProviderError], ...] = (RateLimited,) if launch else (RateLimited, TransientError)

        def attempt() -> T:
            try:
                return fn()
            except Exception as err:  # classified once, here
                classified = classify(err, doing)
                if classified is None or classified is err:
                    raise
                raise classified from err

        retrying = Retrying(retry=retry_if_exception_type(retryable), stop=stop_after_attempt(RETRY_ATTEMPTS),
                            wait=backoff, sleep=self._sleep, reraise=True)
        return retrying(attempt)

    def _target_regions(self, target: PoolTarget) -> tuple[str, ...]:
        return tuple(target.regions) or (self.region,)

    # ------------------------------------------------------------ list

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]},
                   {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        out = []
        for region in self.regions:  # every region, or an error: never a partial view
            found = self._describe(region, f"listing EC2 instances of fleet {fleet!r}{self._in(region)}", filters)
            for raw in found:
                view = self._view(raw, region)
                # state filter is the server's; re-check so a terminated one never leaks through
                if view is not None and view.tags.get(FLEET_TAG) == fleet:
                    out.append(view)
        return out

    def _describe(self, region: str, doing: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ec2 = self.client(region)

        def all_pages() -> list[dict[str, Any]]:
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": self.page_size})
            return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

        return self._call(doing, all_pages)

    def _view(self, raw: Mapping[str, Any], region: str) -> ProviderInstance | None:
        view = instance_view(raw, region, self.price(raw.get("InstanceType", "")))
        if view is not None:
            self._region_of[view.id] = region
        return view

    # ------------------------------------------------------------ create

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self._account_cache.clear()  # usage changes now
        target = spec.target
        base = launch_params(target)
        notes: list[str] = []
        candidates = self._candidates(target, notes)
        landed = self._walk.run(
            candidates, lambda c: self._launch(spec, base, c),
            what=f"launching {spec.count} × {'/'.join(target.sizes)} for pool {target.pool!r}",
            # The lost call under this token went there last: EC2 dedupes on its ClientToken and
            # answers with what it made; another candidate first would launch a second set.
            resume=candidate_of(spec.resume, candidates, self.region), notes=notes)
        return LaunchResult(instances=landed.instances, size=landed.candidate.size,
                            region=landed.instances[0].region, notes=landed.notes)

    def _candidates(self, target: PoolTarget, notes: list[str]) -> list[Ec2Candidate]:
        subnets = self._subnets_by_region(target, notes)
        return [Ec2Candidate(market, size, region, subnet)
                for market in markets(target.options) for size in target.sizes
                for region in self._target_regions(target) for subnet in subnets[region]]

    def _subnets_by_region(self, target: PoolTarget, notes: list[str]) -> dict[str, tuple[str | None, ...]]:
        """The pool's subnets in each of its regions (none given: each region's default subnet).
        With one region every subnet is taken to be there (EC2 refuses one that is not); with
        several, each region is asked which of the subnets it holds."""
        regions = self._target_regions(target)
        subnets = tuple(target.options.get("subnets") or ())
        if not subnets:
            return {region: (None,) for region in regions}
        if len(regions) == 1:
            return {regions[0]: subnets}
        held = {region: self._held_subnets(region, subnets) for region in regions}
        lost = [s for s in subnets if not any(s in h for h in held.values())]
        if lost:
            notes.append(f"subnets {', '.join(lost)}: in none of the regions {', '.join(regions)}")
        return held

    def _held_subnets(self, region: str, subnets: tuple[str, ...]) -> tuple[str | None, ...]:
        ec2 = self.client(region)
        answer = self._call(f"describing subnets{self._in(region)}", lambda: ec2.describe_subnets(
            Filters=[{"Name": "subnet-id", "Values": list(subnets)}]))
        found = {s["SubnetId"] for s in answer.get("Subnets", [])}
        return tuple(s for s in subnets if s in found)

    def _launch(self, spec: LaunchSpec, base: Mapping[str, Any], candidate: Ec2Candidate) -> list[ProviderInstance]:
        token_region = "" if candidate.region == self.region else candidate.region
        params = candidate_params(spec, base, candidate, token_region)
        if spec.on_attempt is not None:
            spec.on_attempt(candidate_key(candidate.market, candidate.size, candidate.subnet, token_region))
        ec2 = self.client(candidate.region)
        resp = self._call(f"launching {spec.count} × {self._where(candidate)}",
                          lambda: ec2.run_instances(**params), launch=True)
        sent = {t["Key"]: t["Value"] for t in params["TagSpecifications"][0]["Tags"]}
        made = []
        for raw in resp.get("Instances", []):
            # the response may omit tags: what we sent is on the instance
            tags = {**sent, **{t["Key"]: t["Value"] for t in raw.get("Tags", [])}}
            view = self._view({**raw, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}, candidate.region)
            if view is not None:
                made.append(view)
        return made

    def _where(self, c: Ec2Candidate) -> str:
        return f"{c.size} {c.market} in {c.subnet or 'the default subnet'}{self._in(c.region)}"

    def _quota_key(self, c: Ec2Candidate) -> str | None:
        """The quota the candidate draws on: per family, market and region (not per subnet)."""
        family = quota_family(c.size)
        return None if family is None else f"{family.name} {c.market} vCPU{self._in(c.region)}"

    def _in(self, region: str) -> str:
        return "" if region == self.region else f" of {region}"

    # ------------------------------------------------------------ destroy and tags

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        grouped, failures = self._by_region(ids)
        for region, in_region in grouped.items():
            for start in range(0, len(in_region), TERMINATE_BATCH):
                failures += self._terminate(region, in_region[start:start + TERMINATE_BATCH])
        return failures

    def _terminate(self, region: str, ids: list[str]) -> list[DestroyFailure]:
        """Terminate `ids`; unknown ids count as destroyed and never fail the others."""
        ec2 = self.client(region)
        pending = list(ids)
        while pending:
            batch = list(pending)
            try:
                self._call(f"terminating EC2 instances {', '.join(batch)}",
                           _terminate_call(ec2, batch))
                return []
            except ProviderError as err:
                if err.code not in GONE_CODES:
                    if len(pending) > 1 and err.kind not in BATCH_WIDE:
                        # one instance EC2 refuses (termination protection, OperationNotPermitted)
                        # fails the whole call: ask for each, so the others stop billing
                        return self._terminate_each(region, pending)
                    return [DestroyFailure(i, err) for i in pending]
                # EC2 names the unknown ids in the message: drop them and try the rest
                named = set(re.split(r"[\s'\",:]+", error_message(err)))
                unknown = {i for i in pending if i in named}
                if not unknown or len(pending) == 1:
                    return self._terminate_each(region, pending) if len(pending) > 1 else []
                pending = [i for i in pending if i not in unknown]
        return []

    def _terminate_each(self, region: str, ids: list[str]) -> list[DestroyFailure]:
        return self._each_instance(region, ids, "terminating EC2 instance {}",
                                   lambda ec2, i: ec2.terminate_instances(InstanceIds=[i]))

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Tag each instance `fleet-draining=true`, one call each (drains are few, and an
        unknown id fails a whole CreateTags call); a gone instance counts as marked."""
        return self._each_by_region(ids, f"tagging EC2 instance {{}} {DRAINING_TAG}", lambda ec2, i: ec2.create_tags(
            Resources=[i], Tags=[{"Key": DRAINING_TAG, "Value": "true"}]))

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        return self._each_by_region(ids, f"untagging EC2 instance {{}} {DRAINING_TAG}", lambda ec2, i: ec2.delete_tags(
            Resources=[i], Tags=[{"Key": DRAINING_TAG}]))

    def _each_by_region(self, ids: Sequence[str], doing: str, call: Callable[[Any, str], Any]) -> list[DestroyFailure]:
        grouped, failures = self._by_region(ids)
        for region, in_region in grouped.items():
            failures += self._each_instance(region, in_region, doing, call)
        return failures

    def _each_instance(self, region: str, ids: Sequence[str], doing: str,
                       call: Callable[[Any, str], Any]) -> list[DestroyFailure]:
        """`call(client, id)` for each id, one request each; the ids that failed, with why.  An
        unknown id is no failure: the instance is gone."""
        ec2 = self.client(region)
        failures = []
        for instance_id in dict.fromkeys(ids):
            try:
                self._call(doing.format(instance_id), _bind(call, ec2, instance_id))
            except ProviderError as err:
                if err.code not in GONE_CODES:
                    failures.append(DestroyFailure(instance_id, err))
        return failures

    def _by_region(self, ids: Sequence[str]) -> tuple[dict[str, list[str]], list[DestroyFailure]]:
        """The ids grouped by the region they live in, and the ids that could not be placed.
        An id not seen yet is looked for in every region; one found nowhere goes to the
        default region (where it counts as gone)."""
        unique = list(dict.fromkeys(ids))
        unseen = [i for i in unique if i not in self._region_of]
        if len(self.regions) > 1 and unseen:
            try:
                self._locate(unseen)
            except ProviderError as err:  # an id that cannot be placed is not asked anywhere
                lost = set(unseen) - set(self._region_of)
                placed = [i for i in unique if i not in lost]
                return self._group(placed), [DestroyFailure(i, err) for i in unseen if i in lost]
        return self._group(unique), []

    def _group(self, ids: list[str]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for instance_id in ids:
            grouped.setdefault(self._region_of.get(instance_id, self.region), []).append(instance_id)
        return grouped

    def _locate(self, ids: list[str]) -> None:
        for region in self.regions:
            if not ids:
                return
            found = self._describe(region, f"locating EC2 instances{self._in(region)}",
                                   [{"Name": "instance-id", "Values": ids}])
            for raw in found:
                self._region_of[raw["InstanceId"]] = region
            ids = [i for i in ids if i not in self._region_of]

    # ------------------------------------------------------------ quota headroom

    def headroom(self, target: PoolTarget) -> Headroom:
        """Machines the account's vCPU quotas still admit for this pool.

        Per candidate type and region: floor((quota - vCPUs in use in its family) / its vCPUs),
        summed over the markets the pool may launch in (spot, then on-demand when it falls
        back).  The pool's headroom is the minimum over its candidates, so whichever candidate
        `create` lands on, the quota admits that many.
        """
        families = {s: quota_family(s) for s in target.sizes}
        known = {s: f for s, f in families.items() if f is not None}
        if not known:
            return Headroom(None, f"no known vCPU quota for {', '.join(target.sizes)}: the pool's max applies")
        try:
            rooms = [self._region_room(region, known, markets(target.options))
                     for region in self._target_regions(target)]
        except HeadroomUnknown as unknown:
            return Headroom(None, str(unknown))
        machines, why = min(rooms, key=lambda p: p[0])
        unknown_sizes = [s for s in target.sizes if families[s] is None]
        extra = f"; no known quota for {', '.join(unknown_sizes)}" if unknown_sizes else ""
        return Headroom(machines, f"{why}{extra}")

    def _region_room(self, region: str, families: Mapping[str, QuotaFamily],
                     pool_markets: Sequence[str]) -> tuple[int, str]:
        try:
            vcpus = self._instance_vcpus(region, families)
            names = {f.name for f in families.values()}
            raws = [r for r in self._account_instances(region)
                    if getattr(quota_family(r.get("InstanceType", "")), "name", None) in names]
            usage = family_usage(raws, quota_family, names,
                                 self._instance_vcpus(region, [r["InstanceType"] for r in raws]))
        except ProviderError as err:
            raise HeadroomUnknown(f"vCPU usage unknown ({err}): the pool's max applies") from err
        return region_room(list(families), families, vcpus, usage, QuotaReader(self._quota_source(region)),
                           pool_markets, self._in(region))

    def _account_instances(self, region: str) -> list[dict[str, Any]]:
        """The account's pending/running instances in `region`, shared by the pools of one tick."""
        cached = self._account_cache.get(region)
        if cached is not None and self._clock() - cached[0] < USAGE_REUSE_S:
            return cached[1]
        raws = self._describe(region, f"reading EC2 vCPU usage in {region}",
                              [{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        self._account_cache[region] = (self._clock(), raws)
        return raws

    def _instance_vcpus(self, region: str, types: Iterable[str]) -> dict[str, int]:
        wanted = set(types)
        missing = sorted(wanted - set(self._vcpus))
        ec2 = self.client(region)
        for start in range(0, len(missing), 100):
            chunk = missing[start:start + 100]
            resp = self._call(f"describing EC2 instance types {', '.join(chunk)}",
                              _describe_types(ec2, chunk))
            for item in resp.get("InstanceTypes", []):
                self._vcpus[item["InstanceType"]] = int(item["VCpuInfo"]["DefaultVCpus"])
        absent = sorted(t for t in wanted if t not in self._vcpus)
        if absent:
            raise InvalidRequest(f"EC2 does not describe instance types {', '.join(absent)}")
        return {t: self._vcpus[t] for t in wanted}

    # ------------------------------------------------------------ price

    def price(self, size: str, region: str | None = None) -> float | None:
        return PRICE_TABLE.get(size)


def _bind(call: Callable[[Any, str], T], ec2: Any, instance_id: str) -> Callable[[], T]:
    return lambda: call(ec2, instance_id)


def _terminate_call(ec2: Any, ids: list[str]) -> Callable[[], Any]:
    return lambda: ec2.terminate_instances(InstanceIds=ids)


def _describe_types(ec2: Any, types: list[str]) -> Callable[[], Any]:
    return lambda: ec2.describe_instance_types(InstanceTypes=types)
