"""The EC2 adapter against moto's server over real HTTP.

moto lacks capacity errors, vCPU quotas, MaxCount fills and ClientToken de-duplication:
tests/aws_faults.py injects those at botocore's HTTP layer (real EC2 error XML) and
answers Service Quotas from a local HTTP responder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from providers.aws import USAGE_REUSE_S, AwsProvider, ServiceQuotasSource, client_token
from providers.base import (
    AuthError,
    CapacityError,
    ErrorKind,
    InstanceStatus,
    InvalidRequest,
    LaunchSpec,
    PoolTarget,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from tests.aws_faults import Ec2Faults, QuotaResponder
from tests.clock import FakeClock as Clock
from tests.provider_contract import *  # noqa: F403
from tests.servers import free_port

REGION = "us-east-1"
G_ON_DEMAND, G_SPOT = "L-DB2E81BA", "L-3819A6DF"
IMAGE = "ami-0f1ee7000000000aa"  # moto does not validate AMIs (and describe_images costs ~2 s)


@dataclass
class AwsHarness:
    provider: AwsProvider
    faults: Ec2Faults
    ec2: Any  # a plain client on moto: what exists, and machines that are not ours
    quotas: QuotaResponder
    clock: Clock
    image: str
    subnets: tuple[str, ...]
    sleeps: list[float] = field(default_factory=list)
    fleet: str = "contract"

    def target(self, pool: str = "p1", **options: Any) -> PoolTarget:
        opts = {"subnets": self.subnets[:2], "image": self.image, "capacity": "on-demand",
                "spot_fallback": "none", **options}
        return PoolTarget(fleet=self.fleet, pool=pool, sizes=("g6e.xlarge", "g5.xlarge"), options=opts)

    def settle(self) -> None:
        pass  # moto shows instances running as soon as they are described

    def block_first_candidate(self, target: PoolTarget) -> None:
        self.faults.no_capacity(target.sizes[0])

    def block_all_candidates(self, target: PoolTarget) -> None:
        for size in target.sizes:
            self.faults.no_capacity(size)

    def unblock_all(self) -> None:
        self.faults.rules.clear()

    def plant_foreign(self, instance_type: str = "g5.xlarge", **extra: Any) -> str:
        tags = [{"Key": "fleet", "Value": "someone-else"}, {"Key": "pool", "Value": "p1"}]
        resp = self.ec2.run_instances(ImageId=self.image, InstanceType=instance_type, MinCount=1, MaxCount=1,
                                      TagSpecifications=[{"ResourceType": "instance", "Tags": tags}], **extra)
        return resp["Instances"][0]["InstanceId"]

    def live(self) -> dict[str, dict[str, Any]]:
        """Every non-terminated instance moto holds, whoever made it."""
        pages = self.ec2.get_paginator("describe_instances").paginate()
        return {i["InstanceId"]: i for p in pages for r in p["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"}


@pytest.fixture
def quota_responder():
    responder = QuotaResponder()
    yield responder
    responder.close()


@pytest.fixture(scope="module")
def session() -> boto3.Session:
    """One session for the module: botocore loads the EC2 model (~1 s) once, not per test."""
    return boto3.Session(region_name=REGION)


def make_provider(endpoint: str, quotas: QuotaResponder, clock: Clock, sleeps: list[float],
                  session: boto3.Session | None = None, **kw: Any) -> AwsProvider:
    session = session or boto3.Session(region_name=REGION)
    return AwsProvider(region=REGION, endpoint_url=endpoint, clock=clock, sleep=sleeps.append, session=session,
                       quotas=ServiceQuotasSource(session, REGION, endpoint_url=quotas.url), **kw)


@pytest.fixture
def harness(aws_env, quota_responder, session) -> AwsHarness:
    clock, sleeps = Clock(), []
    provider = make_provider(aws_env, quota_responder, clock, sleeps, session)
    ec2 = session.client("ec2", endpoint_url=aws_env)
    subnets = tuple(s["SubnetId"] for s in sorted(ec2.describe_subnets()["Subnets"],
                                                  key=lambda s: s["AvailabilityZone"]))
    return AwsHarness(provider=provider, faults=Ec2Faults(provider.ec2), ec2=ec2, quotas=quota_responder,
                      clock=clock, image=IMAGE, subnets=subnets, sleeps=sleeps)


def launches(h: AwsHarness) -> list[tuple[str, str, str | None]]:
    """(instance type, market, subnet) of every run_instances the adapter sent, in order."""
    return [(p["InstanceType"], p.get("InstanceMarketOptions.MarketType", "on-demand"), p.get("SubnetId"))
            for p in h.faults.calls("RunInstances")]


def spec(h: AwsHarness, count: int = 1, token: str = "tok-1", **options: Any) -> LaunchSpec:
    return LaunchSpec(target=h.target(**options), count=count, token=token)


# ---------------------------------------------------------------- create


def test_one_call_with_min_1_max_n_counts_a_partial_fill(harness: AwsHarness) -> None:
    harness.faults.capacity = 2  # EC2 can only place 2 of the 5
    result = harness.provider.create(spec(harness, count=5))
    sent = harness.faults.calls("RunInstances")
    assert len(sent) == 1
    assert (sent[0]["MinCount"], sent[0]["MaxCount"]) == ("1", "5")
    assert len(result.instances) == 2
    assert result.size == "g6e.xlarge" and result.region == "us-east-1a"
    assert {i.id for i in result.instances} == set(harness.live())


def test_tags_and_token_on_instances_and_volumes(harness: AwsHarness) -> None:
    result = harness.provider.create(spec(harness, count=2, token="act-42"))
    for raw in harness.live().values():
        tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
        assert (tags["fleet"], tags["pool"], tags["fleet-token"]) == ("contract", "p1", "act-42")
    volumes = harness.ec2.describe_volumes(Filters=[{"Name": "tag:fleet-token", "Values": ["act-42"]}])["Volumes"]
    attached = {a["InstanceId"] for v in volumes for a in v["Attachments"]}
    assert attached == {i.id for i in result.instances}
    for v in volumes:
        assert {t["Key"]: t["Value"] for t in v["Tags"]}["fleet"] == "contract"


def test_client_token_is_deterministic_per_token_and_candidate(harness: AwsHarness) -> None:
    first = harness.provider.create(spec(harness, token="act-7"))
    # a retry of the same action after a lost response sends the very same ClientToken ...
    harness.provider.create(spec(harness, token="act-7"))
    harness.provider.create(spec(harness, token="act-8"))
    tokens = [p["ClientToken"] for p in harness.faults.calls("RunInstances")]
    assert tokens[0] == tokens[1] != tokens[2]
    assert tokens[0] == client_token("act-7", "on-demand", "g6e.xlarge", harness.subnets[0])
    assert all(len(t) <= 64 and t.isascii() for t in tokens)
    # ... which real EC2 de-duplicates but moto does not (two launches here); the
    # controller relies on the token tag instead: listing finds what the lost call made
    by_token = [i.id for i in harness.provider.list_instances("contract") if i.token == "act-7"]
    assert first.instances[0].id in by_token
    assert len({client_token("t", m, s, n) for m in ("spot", "on-demand") for s in ("a", "b")
                for n in (None, "subnet-1")}) == 8


def test_a_repeated_client_token_returns_the_original_instances(harness: AwsHarness) -> None:
    """With EC2's idempotency emulated (a real RunInstancesResponse for a known token), a retried
    action launches nothing new and reports what the first call made."""
    harness.faults.dedupe = True
    first = harness.provider.create(spec(harness, count=2, token="act-9"))
    again = harness.provider.create(spec(harness, count=2, token="act-9"))
    assert [i.id for i in again.instances] == [i.id for i in first.instances]
    assert {i.token for i in again.instances} == {"act-9"} and again.size == "g6e.xlarge"
    assert len(harness.live()) == 2


def test_ice_in_every_subnet_moves_to_the_next_type_in_the_same_call(harness: AwsHarness) -> None:
    harness.faults.no_capacity("g6e.xlarge")
    result = harness.provider.create(spec(harness, count=2))
    a, b = harness.subnets[:2]
    assert launches(harness) == [("g6e.xlarge", "on-demand", a), ("g6e.xlarge", "on-demand", b),
                                 ("g5.xlarge", "on-demand", a)]
    assert result.size == "g5.xlarge" and len(result.instances) == 2
    assert result.notes == (f"g6e.xlarge on-demand in {a}: no capacity (InsufficientInstanceCapacity)",
                            f"g6e.xlarge on-demand in {b}: no capacity (InsufficientInstanceCapacity)")
    assert {i["InstanceType"] for i in harness.live().values()} == {"g5.xlarge"}


def test_capacity_misses_are_remembered_for_the_ttl(harness: AwsHarness) -> None:
    harness.faults.no_capacity("g6e.xlarge", subnet=harness.subnets[0])
    harness.provider.create(spec(harness, token="a"))
    assert launches(harness)[-1][2] == harness.subnets[1]  # the second subnet had room
    harness.faults.sent.clear()
    again = harness.provider.create(spec(harness, token="b"))
    assert launches(harness) == [("g6e.xlarge", "on-demand", harness.subnets[1])]  # no call to the missed one
    assert "capacity miss remembered" in again.notes[0]
    harness.clock.now += 301  # the miss is forgotten: the first subnet is tried again
    harness.faults.sent.clear()
    harness.provider.create(spec(harness, token="c"))
    assert launches(harness)[0] == ("g6e.xlarge", "on-demand", harness.subnets[0])


def test_spot_without_capacity_falls_back_to_on_demand(harness: AwsHarness) -> None:
    for size in ("g6e.xlarge", "g5.xlarge"):
        harness.faults.no_capacity(size, spot_only=True)
    result = harness.provider.create(spec(harness, count=2, capacity="spot", spot_fallback="on-demand"))
    markets = [m for _, m, _ in launches(harness)]
    assert markets == ["spot"] * 4 + ["on-demand"]
    assert result.size == "g6e.xlarge" and not any(i.spot for i in result.instances)
    assert any("falling back to on-demand" in n for n in result.notes)
    assert sum(": no capacity (" in n for n in result.notes) == 4
    assert not any(i.get("InstanceLifecycle") == "spot" for i in harness.live().values())


def test_spot_launches_spot_and_lists_it_as_spot(harness: AwsHarness) -> None:
    result = harness.provider.create(spec(harness, capacity="spot", spot_fallback="on-demand"))
    assert [i.spot for i in result.instances] == [True]
    assert [i.spot for i in harness.provider.list_instances("contract")] == [True]


def test_spot_without_fallback_raises_capacity_and_launches_nothing(harness: AwsHarness) -> None:
    for size in ("g6e.xlarge", "g5.xlarge"):
        harness.faults.no_capacity(size, spot_only=True)
    with pytest.raises(CapacityError, match="g5.xlarge spot"):
        harness.provider.create(spec(harness, capacity="spot", spot_fallback="none"))
    assert {m for _, m, _ in launches(harness)} == {"spot"}
    assert harness.live() == {}


def test_spot_quota_falls_back_to_on_demand(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "MaxSpotInstanceCountExceeded", 400,
                        when=lambda p: p.get("InstanceMarketOptions.MarketType") == "spot")
    harness.faults.fail("RunInstances", "VcpuLimitExceeded", 400, times=1,
                        when=lambda p: p.get("InstanceMarketOptions.MarketType") == "spot")
    result = harness.provider.create(spec(harness, capacity="spot", spot_fallback="on-demand"))
    assert not result.instances[0].spot
    assert any("falling back to on-demand" in n for n in result.notes)


def test_vcpu_quota_refusal_is_quota_exceeded_and_skips_the_family(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "VcpuLimitExceeded", 400)
    with pytest.raises(QuotaExceeded, match="VcpuLimitExceeded"):
        harness.provider.create(spec(harness))
    # g6e and g5 share the G quota: one refusal is enough, other subnets are not tried
    assert launches(harness) == [("g6e.xlarge", "on-demand", harness.subnets[0])]


def test_throttled_once_then_success_waits_once(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "RequestLimitExceeded", 503, times=1)
    result = harness.provider.create(spec(harness))
    assert len(result.instances) == 1
    assert harness.sleeps == [1.0]  # through the injected sleep
    tokens = [p["ClientToken"] for p in harness.faults.calls("RunInstances")]
    assert len(tokens) == 2 and tokens[0] == tokens[1]
    assert len(harness.live()) == 1


def test_throttled_for_good_gives_up_with_bounded_backoff(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "RequestLimitExceeded", 503)
    with pytest.raises(RateLimited, match="RequestLimitExceeded"):
        harness.provider.create(spec(harness))
    assert harness.sleeps == [1.0, 2.0, 4.0]
    assert len(harness.faults.calls("RunInstances")) == 4


def test_auth_failure_is_auth_error_without_retries(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "AuthFailure", 401,
                        message="AWS was not able to validate the provided access credentials")
    with pytest.raises(AuthError, match="credential") as caught:
        harness.provider.create(spec(harness))
    assert "testing" not in str(caught.value)  # the (dummy) secret never appears
    assert len(harness.faults.calls("RunInstances")) == 1 and harness.sleeps == []
    harness.faults.fail("DescribeInstances", "UnauthorizedOperation", 403)
    with pytest.raises(AuthError, match="listing EC2 instances"):
        harness.provider.list_instances("contract")


def test_other_client_errors_are_invalid_and_server_errors_transient(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "InvalidAMIID.NotFound", 400, times=1)
    with pytest.raises(InvalidRequest, match="InvalidAMIID.NotFound"):
        harness.provider.create(spec(harness))
    harness.faults.fail("RunInstances", "InternalError", 500, times=1)
    with pytest.raises(TransientError, match="InternalError"):
        harness.provider.create(spec(harness))
    # a launch is never re-sent on a 5xx: the next tick adopts by token instead
    assert len(harness.faults.calls("RunInstances")) == 2 and harness.live() == {}


def test_launch_parameters_from_options(harness: AwsHarness) -> None:
    boto3.client("iam", region_name=REGION, endpoint_url=harness.ec2.meta.endpoint_url).create_instance_profile(
        InstanceProfileName="gpu-role")
    group = harness.ec2.create_security_group(GroupName="gpu", Description="gpu workers")["GroupId"]
    template = harness.ec2.create_launch_template(
        LaunchTemplateName="gpu-worker", LaunchTemplateData={"ImageId": harness.image})
    target = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",), options={
        "launch_template": "gpu-worker", "image": None, "security_groups": (group,),
        "key_name": "ops", "iam_instance_profile": "gpu-role", "user_data": "#!/bin/sh\necho hi\n",
        "subnets": (), "capacity": "on-demand", "spot_fallback": "none", "boot_seconds": 300})
    harness.provider.create(LaunchSpec(target=target, count=1, token="lt"))
    sent = harness.faults.calls("RunInstances")[0]
    assert sent["LaunchTemplate.LaunchTemplateName"] == "gpu-worker"
    assert sent["LaunchTemplate.Version"] == "$Default"
    assert "ImageId" not in sent and "SubnetId" not in sent
    assert sent["SecurityGroupId.1"] == group and sent["KeyName"] == "ops"
    assert sent["IamInstanceProfile.Name"] == "gpu-role"
    assert sent["UserData"] == "IyEvYmluL3NoCmVjaG8gaGkK"  # base64 of the script
    by_id = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",),
                       options={"launch_template": template["LaunchTemplate"]["LaunchTemplateId"]})
    harness.provider.create(LaunchSpec(target=by_id, count=1, token="lt2"))
    assert harness.faults.calls("RunInstances")[1]["LaunchTemplate.LaunchTemplateId"].startswith("lt-")


def test_bad_options_are_refused_before_any_call(harness: AwsHarness) -> None:
    no_image = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",), options={})
    with pytest.raises(InvalidRequest, match="launch_template"):
        harness.provider.create(LaunchSpec(target=no_image, count=1, token="x"))
    with pytest.raises(InvalidRequest, match="user data"):
        harness.provider.create(spec(harness, user_data="x" * 20_000))
    assert harness.faults.calls("RunInstances") == []


# ---------------------------------------------------------------- list and destroy


def test_listing_excludes_terminated_and_other_fleets_and_maps_states(harness: AwsHarness) -> None:
    made = harness.provider.create(spec(harness, count=3)).instances
    gone, stopped, running = (i.id for i in made)
    harness.ec2.terminate_instances(InstanceIds=[gone])
    harness.ec2.stop_instances(InstanceIds=[stopped])
    foreign = harness.plant_foreign()
    listed = {i.id: i for i in harness.provider.list_instances("contract")}
    assert set(listed) == {stopped, running}
    assert listed[stopped].status is InstanceStatus.STOPPED
    assert listed[running].status is InstanceStatus.READY
    assert listed[running].region == "us-east-1a" and listed[running].price_hourly_usd == 1.861
    assert listed[running].created_at is not None and listed[running].created_at.tzinfo is not None
    assert foreign in harness.live() and foreign not in listed


def test_listing_reads_every_page(harness: AwsHarness) -> None:
    harness.provider.page_size = 5
    for n in range(7):  # seven reservations: moto pages by reservation
        harness.provider.create(spec(harness, token=f"p{n}"))
    assert len(harness.provider.list_instances("contract")) == 7
    assert len(harness.faults.calls("DescribeInstances")) >= 2


def test_a_failed_listing_raises_after_bounded_retries(harness: AwsHarness) -> None:
    harness.provider.create(spec(harness))
    harness.faults.fail("DescribeInstances", "InternalError", 500)
    with pytest.raises(TransientError, match="listing EC2 instances of fleet 'contract'"):
        harness.provider.list_instances("contract")
    assert harness.sleeps == [1.0, 2.0, 4.0]


def test_a_refused_connection_is_transient(aws_env, quota_responder, session) -> None:
    provider = make_provider(f"http://127.0.0.1:{free_port()}", quota_responder, Clock(), [], session)
    with pytest.raises(TransientError, match="EndpointConnectionError"):
        provider.list_instances("contract")


def test_no_credentials_is_an_auth_error(aws_env, monkeypatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = AwsProvider(region=REGION, endpoint_url=aws_env, sleep=lambda s: None)
    with pytest.raises(AuthError, match="no usable AWS credentials"):
        provider.list_instances("contract")


def test_aws_endpoint_url_is_honoured(aws_env, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    provider = AwsProvider(region=REGION, sleep=lambda s: None)
    assert provider.ec2.meta.endpoint_url == aws_env
    assert provider.list_instances("contract") == []


def test_destroy_with_unknown_ids_terminates_the_live_ones(harness: AwsHarness) -> None:
    made = [i.id for i in harness.provider.create(spec(harness, count=3)).instances]
    unknown = ["i-0123456789abcdef0", "i-0fedcba9876543210"]
    failures = harness.provider.destroy([unknown[0], made[0], unknown[1], made[1], made[2]])
    assert failures == []
    assert harness.live() == {}
    assert harness.provider.list_instances("contract") == []
    # already terminated counts as destroyed too
    assert harness.provider.destroy(made) == []


def test_destroy_reports_a_refusal_for_every_id(harness: AwsHarness) -> None:
    made = [i.id for i in harness.provider.create(spec(harness, count=2)).instances]
    harness.faults.fail("TerminateInstances", "UnauthorizedOperation", 403)
    failures = harness.provider.destroy(made)
    assert sorted(f.id for f in failures) == sorted(made)
    assert all(isinstance(f.error, AuthError) for f in failures)
    assert set(harness.live()) == set(made)


def test_one_protected_instance_does_not_keep_the_others_alive(harness: AwsHarness) -> None:
    made = [i.id for i in harness.provider.create(spec(harness, count=3)).instances]
    # termination protection, set by a launch template or by hand: EC2 refuses the whole call
    harness.ec2.modify_instance_attribute(InstanceId=made[0], DisableApiTermination={"Value": True})
    failures = harness.provider.destroy(made)
    assert [f.id for f in failures] == [made[0]]
    assert "OperationNotPermitted" in str(failures[0].error)
    assert set(harness.live()) == {made[0]}


# ---------------------------------------------------------------- quota headroom


def test_g_quota_of_8_admits_two_g5_xlarge_counting_what_exists(harness: AwsHarness) -> None:
    harness.quotas.applied[G_ON_DEMAND] = 8.0
    target = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",),
                        options={"image": harness.image, "subnets": harness.subnets[:1]})
    assert harness.provider.headroom(target).machines == 2
    harness.plant_foreign("m5.large")  # another family: its own quota
    harness.plant_foreign("g5.xlarge", InstanceMarketOptions={"MarketType": "spot"})  # the spot quota
    harness.clock.advance(USAGE_REUSE_S)  # the account's usage is reused within one tick only
    assert harness.provider.headroom(target).machines == 2
    harness.provider.create(LaunchSpec(target=target, count=1, token="a"))
    assert harness.provider.headroom(target).machines == 1
    foreign = harness.plant_foreign("g5.xlarge")  # not ours, but the quota is the account's
    assert harness.provider.headroom(target).machines == 1  # same tick: the usage read is shared
    harness.clock.advance(USAGE_REUSE_S)
    head = harness.provider.headroom(target)
    assert head.machines == 0
    assert "L-DB2E81BA 8 vCPU, 8 in use" in head.note
    harness.ec2.terminate_instances(InstanceIds=[foreign])  # terminated ones no longer count
    harness.clock.advance(USAGE_REUSE_S)
    assert harness.provider.headroom(target).machines == 1


def test_headroom_is_the_minimum_over_candidates_and_sums_markets(harness: AwsHarness) -> None:
    harness.quotas.applied.update({G_ON_DEMAND: 16.0, G_SPOT: 8.0, "L-417A185B": 192.0})
    mixed = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge", "p5.48xlarge"))
    head = harness.provider.headroom(mixed)
    assert head.machines == 1 and head.note.startswith("p5.48xlarge (192 vCPU)")
    spot = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",),
                      options={"capacity": "spot", "spot_fallback": "on-demand"})
    assert harness.provider.headroom(spot).machines == 2 + 4
    spot_only = PoolTarget(fleet="contract", pool="p1", sizes=("g5.xlarge",), options={"capacity": "spot"})
    assert harness.provider.headroom(spot_only).machines == 2


def test_headroom_falls_back_to_the_default_quota(harness: AwsHarness) -> None:
    harness.quotas.defaults[G_ON_DEMAND] = 4.0  # no applied value: GetServiceQuota says NoSuchResource
    target = PoolTarget(fleet="contract", pool="p1", sizes=("g6e.xlarge",))
    assert harness.provider.headroom(target).machines == 1
    assert [op for op, _ in harness.quotas.requests] == ["GetServiceQuota", "GetAWSDefaultServiceQuota"]


def test_quota_api_denied_means_unknown_headroom(harness: AwsHarness) -> None:
    harness.quotas.deny = True
    head = harness.provider.headroom(harness.target())
    assert head.machines is None
    assert "AccessDeniedException" in head.note and "pool's max applies" in head.note


def test_headroom_unknown_for_families_without_a_quota_code(harness: AwsHarness) -> None:
    head = harness.provider.headroom(PoolTarget(fleet="contract", pool="p1", sizes=("dl1.24xlarge",)))
    assert head.machines is None and "pool's max applies" in head.note


def test_price_table() -> None:
    provider = AwsProvider(region=REGION, session=boto3.Session(region_name=REGION, aws_access_key_id="a",
                                                                aws_secret_access_key="b"))
    assert provider.price("g5.xlarge") == 1.006 and provider.price("g6e.xlarge", "us-east-1a") == 1.861
    assert provider.price("z9.unknown") is None
    assert provider.billing.cost(30, 3.6) == pytest.approx(0.06)  # 60 s minimum


# ---------------------------------------------------------------- errors that are not the SDK's


def test_a_programming_error_inside_a_call_propagates_unwrapped_and_unretried(harness: AwsHarness,
                                                                             monkeypatch) -> None:
    calls = []

    def broken(**kwargs: Any) -> None:
        calls.append(kwargs)
        raise TypeError("run_instances() got an unexpected keyword argument")

    monkeypatch.setattr(harness.provider.ec2, "run_instances", broken)
    with pytest.raises(TypeError, match="unexpected keyword") as caught:
        harness.provider.create(spec(harness))
    assert caught.value.__cause__ is None and len(calls) == 1 and harness.sleeps == []


def test_sdk_errors_carry_their_code_and_kind(harness: AwsHarness) -> None:
    harness.faults.fail("RunInstances", "InvalidAMIID.NotFound", 400, times=1)
    with pytest.raises(InvalidRequest) as caught:
        harness.provider.create(spec(harness))
    assert caught.value.code == "InvalidAMIID.NotFound" and caught.value.kind is ErrorKind.INVALID
    harness.faults.fail("DescribeInstances", "Unavailable", 503)
    with pytest.raises(TransientError) as transient:
        harness.provider.list_instances("contract")
    assert transient.value.code == "Unavailable" and harness.sleeps == [1.0, 2.0, 4.0]


# ---------------------------------------------------------------- regions


def test_a_pool_with_region_us_west_2_launches_there(aws_env, quota_responder, session) -> None:
    clock, sleeps = Clock(), []
    provider = make_provider(aws_env, quota_responder, clock, sleeps, session, regions=("us-west-2",),
                             quota_sources=lambda r: ServiceQuotasSource(session, r, endpoint_url=quota_responder.url))
    faults = Ec2Faults(provider.client("us-west-2"))  # moto launches MinCount: let it fill MaxCount
    west = session.client("ec2", region_name="us-west-2", endpoint_url=aws_env)
    east = session.client("ec2", region_name=REGION, endpoint_url=aws_env)
    target = PoolTarget(fleet="contract", pool="west", sizes=("g5.xlarge",), regions=("us-west-2",),
                        options={"image": IMAGE})
    made = provider.create(LaunchSpec(target=target, count=2, token="w1"))
    assert made.region.startswith("us-west-2") and len(made.instances) == 2
    assert [p["Action"] for p in faults.sent] == ["RunInstances"]
    west_ids = {i["InstanceId"] for r in west.describe_instances()["Reservations"] for i in r["Instances"]}
    assert {i.id for i in made.instances} == west_ids
    assert east.describe_instances()["Reservations"] == []
    # a default-region pool still launches in the adapter's region; the listing covers both
    home = provider.create(LaunchSpec(target=PoolTarget(fleet="contract", pool="east", sizes=("g5.xlarge",),
                                                        options={"image": IMAGE}), count=1, token="e1"))
    assert home.region.startswith(REGION)
    listed = {i.id: i.region for i in provider.list_instances("contract")}
    assert set(listed) == {i.id for i in made.instances} | {home.instances[0].id}
    # the quota is read in the pool's region
    quota_responder.applied[G_ON_DEMAND] = 16.0
    assert provider.headroom(target).machines == 2  # 16 vCPU - 2 x 4 in us-west-2
    # a new process (nothing listed yet) destroys in the right region
    fresh = make_provider(aws_env, quota_responder, clock, sleeps, session, regions=("us-west-2",))
    assert fresh.destroy([i.id for i in made.instances] + [home.instances[0].id]) == []
    assert provider.list_instances("contract") == []


def test_a_region_that_cannot_be_listed_fails_the_whole_listing(aws_env, quota_responder, session) -> None:
    provider = make_provider(aws_env, quota_responder, Clock(), [], session, regions=("us-west-2",))
    Ec2Faults(provider.client("us-west-2")).fail("DescribeInstances", "UnauthorizedOperation", 403)
    with pytest.raises(AuthError, match="us-west-2"):
        provider.list_instances("contract")


def test_capabilities_are_the_clouds() -> None:
    caps = AwsProvider.capabilities
    assert caps.local_prices and caps.spot and caps.quotas and not caps.bills_stopped_in_full


def test_the_wiring_gives_the_adapter_every_region_its_pools_name(aws_env, tmp_path) -> None:
    from fleet.cloud import build_providers, price_problems
    from tests.builders import make_config, pool, queue

    aws = {"provider": "aws", "size": ["g5.xlarge"], "image": IMAGE, "min": 0, "max": 2, "signals": [queue(1)]}
    config = make_config(pool("west", **aws, region=["us-west-2"]), pool("home", **aws),
                         pool("odd", **{**aws, "size": ["g9.unknown"]}),
                         fleet={"name": "w", "database_url": f"sqlite:///{tmp_path / 'f.db'}"}, budget=10.0,
                         providers={"aws": {"region": REGION, "endpoint_url": aws_env}})
    providers = build_providers(config, clock=Clock())
    assert providers["aws"].regions == (REGION, "us-west-2")  # type: ignore[attr-defined]
    # the local price table (capabilities.local_prices): an unknown price is a problem at start
    assert [p.split(":")[0] for p in price_problems(config, providers)] == ["pools[2].price_hourly_usd"]


def test_subnets_of_a_multi_region_pool_are_tried_in_their_own_region(aws_env, quota_responder, session) -> None:
    provider = make_provider(aws_env, quota_responder, Clock(), [], session)
    east_subnet = session.client("ec2", endpoint_url=aws_env).describe_subnets()["Subnets"][0]["SubnetId"]
    west = session.client("ec2", region_name="us-west-2", endpoint_url=aws_env)
    west_subnet = west.describe_subnets()["Subnets"][0]["SubnetId"]
    east_faults = Ec2Faults(provider.ec2)
    east_faults.no_capacity("g5.xlarge")
    west_faults = Ec2Faults(provider.client("us-west-2"))
    target = PoolTarget(fleet="contract", pool="both", sizes=("g5.xlarge",), regions=(REGION, "us-west-2"),
                        options={"image": IMAGE, "subnets": (east_subnet, west_subnet)})
    made = provider.create(LaunchSpec(target=target, count=1, token="mr"))
    assert made.region.startswith("us-west-2")
    assert [p.get("SubnetId") for p in east_faults.calls("RunInstances")] == [east_subnet]
    assert [p.get("SubnetId") for p in west_faults.calls("RunInstances")] == [west_subnet]
    assert made.notes == (f"g5.xlarge on-demand in {east_subnet}: no capacity (InsufficientInstanceCapacity)",)
    assert set(provider.regions) == {REGION, "us-west-2"}  # a client made for a pool is listed too
    assert [i.id for i in provider.list_instances("contract")] == [made.instances[0].id]


def test_an_id_whose_region_cannot_be_found_is_a_failure_not_a_destroy(aws_env, quota_responder, session) -> None:
    provider = make_provider(aws_env, quota_responder, Clock(), [], session, regions=("us-west-2",))
    Ec2Faults(provider.client("us-west-2")).fail("DescribeInstances", "UnauthorizedOperation", 403)
    (failure,) = provider.destroy(["i-0123456789abcdef0"])
    assert failure.id == "i-0123456789abcdef0" and failure.error.kind is ErrorKind.AUTH
