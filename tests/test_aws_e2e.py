"""`fleet` end to end on an AWS pool: the CLI and the controller, the boto3 adapter, moto's
server over HTTP and a real SQLite database.

The CLI test runs `fleet` as a user does (a subprocess; the adapter built by the controller's
factory from `[providers.aws]`, endpoint_url pointing at moto).  The tick tests hand the
controller a ready-made `AwsProvider` whose EC2 client carries tests/aws_faults.py's hook
(capacity errors, EC2's MaxCount fill, ClientToken idempotency) and whose quotas come from a
local Service Quotas responder; they share a virtual clock with the adapter's sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from fleet.config import parse_config
from fleet.controller import Controller
from fleet.render import plan_json
from fleet.wiring import build_controller
from providers.aws import AwsProvider, ServiceQuotasSource
from tests import builders
from tests.aws_faults import Ec2Faults, QuotaResponder
from tests.clock import FakeClock

REGION = "us-east-1"
IMAGE = "ami-0f1ee7000000000aa"  # moto does not validate AMIs
G_ON_DEMAND = "L-DB2E81BA"


class Crash(BaseException):
    """The controller process dies (nothing in the tick may catch this)."""


class CrashAfterCreate:
    """The real adapter, but the process dies right after run_instances returned."""

    def __init__(self, inner: AwsProvider):
        self.inner = inner
        self.name, self.billing = inner.name, inner.billing

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def create(self, spec):
        self.inner.create(spec)
        raise Crash("killed after run_instances returned, before the database recorded it")


@pytest.fixture(scope="module")
def session() -> boto3.Session:
    return boto3.Session(region_name=REGION)


@pytest.fixture
def quotas():
    responder = QuotaResponder()
    yield responder
    responder.close()


@dataclass
class Rig:
    endpoint: str
    tmp_path: Path
    session: boto3.Session
    quotas: QuotaResponder
    clock: FakeClock
    ec2: Any
    subnets: tuple[str, ...]

    def config(self, *, queue: float = 12.0, **pool: Any) -> dict[str, Any]:
        return builders.config_data(
            builders.pool("llm", **dict(provider="aws", size=["g6e.xlarge", "g5.xlarge"], subnets=list(self.subnets),
                                        image=IMAGE, min=0, max=10, boot_seconds=120, max_boot_seconds=900,
                                        scale_up_cooldown_s=30, scale_down_cooldown_s=120,
                                        scale_down_stabilization_s=120, signals=[builders.queue(queue)]) | pool),
            fleet={"name": "e2e", "database_url": f"sqlite:///{self.tmp_path / 'fleet.db'}", "tick_seconds": 15,
                   "metrics_port": 0},
            budget=40.0,
            providers={"aws": {"region": REGION, "endpoint_url": self.endpoint, "capacity_miss_ttl_s": 300.0}})

    def provider(self) -> AwsProvider:
        """The adapter as the factory builds it, plus the virtual sleep and the quota responder."""
        return AwsProvider(region=REGION, endpoint_url=self.endpoint, capacity_miss_ttl_s=300.0, clock=self.clock,
                           sleep=self.clock.sleep, session=self.session,
                           quotas=ServiceQuotasSource(self.session, REGION, endpoint_url=self.quotas.url))

    def controller(self, provider: Any, **config: Any) -> Controller:
        return build_controller(parse_config(self.config(**config)), providers={"aws": provider}, clock=self.clock)

    def live(self) -> dict[str, dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate()
        return {i["InstanceId"]: i for p in pages for r in p["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"}


@pytest.fixture
def rig(aws_env, tmp_path, session, quotas) -> Rig:
    ec2 = session.client("ec2", endpoint_url=aws_env)
    subnets = tuple(s["SubnetId"] for s in sorted(ec2.describe_subnets()["Subnets"],
                                                  key=lambda s: s["AvailabilityZone"]))[:2]
    return Rig(aws_env, tmp_path, session, quotas, FakeClock(time.time()), ec2, subnets)  # moto stamps LaunchTime with the wall clock


def tags(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def db_ids(ctl: Controller) -> set[str]:
    return {m.provider_id for m in ctl.store.unfinished_machines()}


def reasons(result) -> list[str]:
    (pool,) = plan_json(result)["pools"]
    return pool["reasons"]


# ---------------------------------------------------------------- the CLI, as a user runs it


def fleet_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLEET_LOG_LEVEL": "INFO", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_run_once_launches_tagged_instances_of_the_first_type(rig: Rig) -> None:
    rig.ec2.create_launch_template(LaunchTemplateName="gpu-worker", LaunchTemplateData={"ImageId": IMAGE})
    data = rig.config(queue=4.0)  # one machine: moto launches MinCount (1) whatever MaxCount says
    del data["pools"][0]["image"]
    data["pools"][0]["launch_template"] = "gpu-worker"
    (rig.tmp_path / "fleet.toml").write_text(builders.to_toml(data))
    run = fleet_cli("run", "--once", "--config", "fleet.toml", cwd=rig.tmp_path)
    assert run.returncode == 0, run.stderr
    (inst,) = rig.live().values()
    assert inst["InstanceType"] == "g6e.xlarge" and inst["SubnetId"] == rig.subnets[0]
    got = tags(inst)
    assert (got["fleet"], got["pool"]) == ("e2e", "llm") and got["fleet-token"].startswith("llm-")
    assert got["aws:ec2launchtemplate:id"].startswith("lt-")  # launched from the template
    volumes = rig.ec2.describe_volumes(Filters=[{"Name": "tag:fleet", "Values": ["e2e"]}])["Volumes"]
    assert [a["InstanceId"] for v in volumes for a in v["Attachments"]] == [inst["InstanceId"]]

    plan = fleet_cli("plan", "--config", "fleet.toml", "--output", "json", cwd=rig.tmp_path)
    assert plan.returncode == 0, plan.stderr
    (pool,) = json.loads(plan.stdout)["pools"]
    assert (pool["provider"], pool["ready"] + pool["booting"], pool["desired"], pool["actions"]) == \
        ("aws", 1, 1, [])
    assert len(rig.live()) == 1  # plan changed nothing
    # moto cannot answer EC2 quotas: the scale-up said the pool's own max applies
    assert "pool's max applies" in " ".join(run.stdout.split())


# ---------------------------------------------------------------- ticks with faults and quotas


def test_a_tick_launches_the_first_type_in_one_call(rig: Rig) -> None:
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2)
    ctl = rig.controller(provider)
    ctl.tick()
    live = rig.live()
    assert {i["InstanceType"] for i in live.values()} == {"g6e.xlarge"} and len(live) == 3  # 12 / 4
    (sent,) = faults.calls("RunInstances")
    assert (sent["MinCount"], sent["MaxCount"]) == ("1", "3")
    assert {tags(i)["fleet-token"] for i in live.values()} == {sent["TagSpecification.1.Tag.3.Value"]}
    assert db_ids(ctl) == set(live)


def test_ice_for_g6e_in_every_subnet_launches_g5_in_the_same_tick(rig: Rig) -> None:
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2)
    faults.no_capacity("g6e.xlarge")
    ctl = rig.controller(provider)
    result = ctl.tick()
    live = rig.live()
    assert {i["InstanceType"] for i in live.values()} == {"g5.xlarge"} and len(live) == 3
    assert [p["InstanceType"] for p in faults.calls("RunInstances")] == ["g6e.xlarge", "g6e.xlarge", "g5.xlarge"]
    why = reasons(result)
    for subnet in rig.subnets:
        assert f"g6e.xlarge on-demand in {subnet}: no capacity (InsufficientInstanceCapacity)" in why
    (recorded,) = ctl.store.recent_decisions("llm", 1)
    assert any("g6e.xlarge" in r["message"] and "no capacity" in r["message"] for r in recorded["reasons"])
    assert db_ids(ctl) == set(live)


def test_spot_capacity_gone_launches_on_demand_and_the_plan_says_why(rig: Rig) -> None:
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2)
    for size in ("g6e.xlarge", "g5.xlarge"):
        faults.no_capacity(size, spot_only=True)
    ctl = rig.controller(provider, capacity="spot", spot_fallback="on-demand")
    result = ctl.tick()
    live = rig.live()
    assert len(live) == 3 and not any(i.get("InstanceLifecycle") == "spot" for i in live.values())
    assert {i["InstanceType"] for i in live.values()} == {"g6e.xlarge"}
    assert any("falling back to on-demand" in r for r in reasons(result))
    assert sum("spot in" in r and "no capacity" in r for r in reasons(result)) == 4
    assert {i.spot for i in provider.list_instances("e2e")} == {False}
    assert db_ids(ctl) == set(live)


def test_a_g_quota_of_8_allows_two_g5_xlarge_whatever_the_demand(rig: Rig) -> None:
    rig.quotas.applied[G_ON_DEMAND] = 8.0
    provider = rig.provider()
    Ec2Faults(provider.ec2)
    ctl = rig.controller(provider, queue=400.0, size=["g5.xlarge"], max=50)  # demand: 100 machines
    first = ctl.tick()
    assert [i["InstanceType"] for i in rig.live().values()] == ["g5.xlarge"] * 2
    assert any("L-DB2E81BA" in r for r in reasons(first))
    for _ in range(3):
        rig.clock.advance(31)  # past the scale-up cooldown each time
        result = ctl.tick()
        assert len(rig.live()) == 2
        assert plan_json(result)["pools"][0]["actions"] == []
    assert any("8 in use" in r for r in reasons(result))


def test_a_crash_after_run_instances_is_adopted_not_launched_again(rig: Rig) -> None:
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2, dedupe=True)
    with pytest.raises(Crash):
        rig.controller(CrashAfterCreate(provider)).tick()
    made = set(rig.live())
    assert len(made) == 3
    restarted = rig.controller(provider)  # a new process on the same database
    rig.clock.advance(31)
    restarted.tick()
    assert db_ids(restarted) == made and set(rig.live()) == made
    assert len(faults.calls("RunInstances")) == 1
    machines = restarted.store.unfinished_machines()
    assert all(m.token == tags(rig.live()[m.provider_id])["fleet-token"] for m in machines)
    for _ in range(2):
        rig.clock.advance(31)
        restarted.tick()
    assert len(faults.calls("RunInstances")) == 1 and set(rig.live()) == made


def test_a_crash_unseen_by_the_next_listing_retries_under_the_same_token(rig: Rig) -> None:
    """When the listing lags, the next tick retries the action with its token: EC2 (emulated
    here: moto does not dedupe) answers with the instances the first call made."""
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2, dedupe=True)
    with pytest.raises(Crash):
        rig.controller(CrashAfterCreate(provider)).tick()
    made = set(rig.live())
    faults.hide_listings = 1  # the restarted controller's first listing does not show them yet
    restarted = rig.controller(provider)
    rig.clock.advance(31)
    restarted.tick()
    first, retry = faults.calls("RunInstances")
    assert first["ClientToken"] == retry["ClientToken"]
    assert set(rig.live()) == made and db_ids(restarted) == made  # recorded, not launched twice


def test_a_retry_after_a_crash_goes_where_the_lost_call_went(rig: Rig) -> None:
    """The lost call found no capacity in subnet A and launched in B.  The restarted process
    has no memory of A's miss and A has capacity again: a retry that tried A first would launch
    a second set under another ClientToken.  It goes to B first, recorded before the call."""
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2, dedupe=True)
    faults.no_capacity("g6e.xlarge", subnet=rig.subnets[0])
    faults.rules[-1].times = 1  # A lacks capacity for the first call only
    with pytest.raises(Crash):
        rig.controller(CrashAfterCreate(provider)).tick()
    made = set(rig.live())
    assert len(made) == 3
    restarted_provider = rig.provider()  # a new process: no capacity misses remembered
    retry_faults = Ec2Faults(restarted_provider.ec2, dedupe=True, hide_listings=1)  # the listing lags
    retry_faults.launched = faults.launched  # EC2 keeps the ClientTokens it launched under
    restarted = rig.controller(restarted_provider)
    rig.clock.advance(31)
    restarted.tick()
    (retry,) = retry_faults.calls("RunInstances")
    assert retry["SubnetId"] == rig.subnets[1] and retry["ClientToken"] == faults.calls("RunInstances")[-1]["ClientToken"]
    assert set(rig.live()) == made and db_ids(restarted) == made  # recorded, not launched twice


# ---------------------------------------------------------------- chaos


def test_60_ticks_of_random_demand_with_20_percent_of_ec2_calls_failing(rig: Rig) -> None:
    import random

    from providers.aws import PRICE_TABLE

    rng = random.Random(5)
    provider = rig.provider()
    faults = Ec2Faults(provider.ec2, dedupe=True)
    injected = []

    def chance(params: dict[str, str]) -> bool:
        hit = rng.random() < 0.2
        if hit:
            injected.append(params.get("Action"))
        return hit

    faults.fail("RunInstances", "InsufficientInstanceCapacity", 500, when=chance)
    faults.fail("RunInstances", "RequestLimitExceeded", 503, when=chance)
    faults.fail("DescribeInstances", "InternalError", 500, when=chance)
    faults.fail("TerminateInstances", "InternalError", 500, when=chance)
    rig.quotas.applied["L-DB2E81BA"] = 64.0  # G on-demand vCPUs: room for 16 xlarge
    global_cap, pool_cap = 12.0, 10.0
    signals = rig.tmp_path / "signals.json"
    data = rig.config(max_hourly_usd=pool_cap, scale_up_cooldown_s=0, scale_down_cooldown_s=30,
                      scale_down_stabilization_s=30)
    data["budget"]["max_hourly_usd"] = global_cap
    data["pools"][0]["signals"][0]["source"] = {"type": "file", "path": str(signals), "key": "q"}
    ctl = build_controller(parse_config(data), providers={"aws": provider}, clock=rig.clock)
    crashed, queue = 0, 8
    for _ in range(60):
        if rng.random() < 0.2:
            queue = rng.choice([0, 4, 8, 16, 40])
        signals.write_text(json.dumps({"q": queue}))
        rig.clock.advance(rng.uniform(10, 40))
        try:
            ctl.tick()
        except Exception:  # noqa: BLE001  (counted: a tick must absorb provider failures)
            crashed += 1
        burn = sum(PRICE_TABLE[i["InstanceType"]] for i in rig.live().values())
        assert burn <= min(global_cap, pool_cap) + 1e-9
    launches = len(faults.calls("RunInstances"))
    assert launches > 5 and len(faults.calls("TerminateInstances")) > 0  # demand moved both ways
    assert {"RunInstances", "DescribeInstances", "TerminateInstances"} <= set(injected)  # the chaos bit
    print(f"calls={len(faults.sent)} injected={len(injected)} launches={launches} crashed={crashed}")
    faults.rules.clear()  # calm: reconcile what the failures left
    for _ in range(3):
        rig.clock.advance(30)
        ctl.tick()
    assert crashed == 0
    assert db_ids(ctl) == set(rig.live()), "the database and EC2 disagree"
