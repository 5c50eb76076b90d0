"""What one EC2 launch is: its candidates, their keys and ClientTokens, the run_instances
parameters, and an instance as the adapter reads it back."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    POOL_TAG,
    TOKEN_TAG,
    InstanceStatus,
    InvalidRequest,
    LaunchSpec,
    PoolTarget,
    ProviderInstance,
)

MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit before base64
SPOT_OPTIONS = {"MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}

LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
# EC2 state code (& 0xFF) → protocol status; 48 terminated is never listed
STATUS_BY_CODE: Mapping[int, InstanceStatus] = {
    0: InstanceStatus.BOOTING, 16: InstanceStatus.READY, 32: InstanceStatus.TERMINATING,
    64: InstanceStatus.TERMINATING, 80: InstanceStatus.STOPPED,
}


class Ec2Candidate(NamedTuple):
    """One place a pool may launch: market × instance type × region × subnet (None: the default)."""

    market: str
    size: str
    region: str
    subnet: str | None


def markets(options: Mapping[str, Any]) -> list[str]:
    """The markets a pool launches in, in order: spot then on-demand when it falls back."""
    capacity = options.get("capacity") or "on-demand"
    out = [capacity]
    if capacity == "spot" and (options.get("spot_fallback") or "none") == "on-demand":
        out.append("on-demand")
    return out


def market_transition(previous: Ec2Candidate, current: Ec2Candidate) -> str | None:
    """The walk's note when it moves from the spot candidates to the on-demand fallback."""
    if previous.market == "spot" and current.market == "on-demand":
        return "spot: no capacity or quota in any candidate, falling back to on-demand"
    return None


def candidate_key(market: str, size: str, subnet: str | None, region: str = "") -> str:
    """A launch candidate as `LaunchSpec.resume` names it (no region: the adapter's default)."""
    key = f"{market}|{size}|{subnet or ''}"
    return f"{key}|{region}" if region else key


def candidate_of(key: str | None, candidates: Sequence[Ec2Candidate], default_region: str) -> Ec2Candidate | None:
    """The candidate `key` names, if it is still one of this pool's."""
    parts = (key or "").split("|")
    if len(parts) not in (3, 4):
        return None
    region = parts[3] if len(parts) == 4 else default_region
    found = Ec2Candidate(parts[0], parts[1], region, parts[2] or None)
    return found if found in candidates else None


def client_token(token: str, market: str, size: str, subnet: str | None, region: str = "") -> str:
    """A deterministic EC2 ClientToken (≤ 64 ASCII chars) for one action and candidate.

    Different per candidate: EC2 refuses a token reused with other parameters.  `region` is
    empty for the adapter's default region (tokens sent before regions existed stay the same).
    """
    where = f"|{region}" if region else ""
    digest = hashlib.sha256(f"{token}|{market}|{size}|{subnet or ''}{where}".encode()).hexdigest()
    return f"fleet-{digest[:48]}"


def instance_tags(spec: LaunchSpec) -> list[dict[str, str]]:
    target = spec.target
    return [{"Key": FLEET_TAG, "Value": target.fleet}, {"Key": POOL_TAG, "Value": target.pool},
            {"Key": TOKEN_TAG, "Value": spec.token}, {"Key": "Name", "Value": f"{target.pool}-{spec.token}"}]


def launch_params(target: PoolTarget) -> dict[str, Any]:
    """The candidate-independent run_instances parameters, validated up front."""
    opts = target.options
    params = _image(opts)
    if not params:
        raise InvalidRequest(f"pool {target.pool!r}: set `launch_template` or `image`")
    params.update(_security_groups(opts))
    if opts.get("key_name"):
        params["KeyName"] = opts["key_name"]
    profile = opts.get("iam_instance_profile")
    if profile:
        params["IamInstanceProfile"] = {"Arn": profile} if str(profile).startswith("arn:") else {"Name": profile}
    user_data = opts.get("user_data")
    if user_data:
        size = len(user_data.encode())
        if size > MAX_USER_DATA_BYTES:
            raise InvalidRequest(f"pool {target.pool!r}: user data is {size} bytes, "
                                 f"EC2 allows {MAX_USER_DATA_BYTES}")
        params["UserData"] = user_data  # boto3 base64-encodes it
    return params


def candidate_params(spec: LaunchSpec, base: Mapping[str, Any], candidate: Ec2Candidate,
                     token_region: str) -> dict[str, Any]:
    """run_instances parameters for one candidate."""
    tags = instance_tags(spec)
    params: dict[str, Any] = {
        **base, "InstanceType": candidate.size, "MinCount": 1, "MaxCount": spec.count,
        "ClientToken": client_token(spec.token, candidate.market, candidate.size, candidate.subnet, token_region),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags}],
    }
    if candidate.subnet is not None:
        params["SubnetId"] = candidate.subnet
    if candidate.market == "spot":
        params["InstanceMarketOptions"] = SPOT_OPTIONS
    return params


def _image(opts: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    template = opts.get("launch_template")
    if template:
        key = "LaunchTemplateId" if str(template).startswith("lt-") else "LaunchTemplateName"
        params["LaunchTemplate"] = {key: template, "Version": "$Default"}
    if opts.get("image"):
        params["ImageId"] = opts["image"]
    return params


def _security_groups(opts: Mapping[str, Any]) -> dict[str, Any]:
    groups = tuple(opts.get("security_groups") or ())
    ids = [g for g in groups if g.startswith("sg-")]
    names = [g for g in groups if not g.startswith("sg-")]
    params: dict[str, Any] = {}
    if ids:
        params["SecurityGroupIds"] = ids
    if names:  # group names only work in the default VPC, without a subnet
        params["SecurityGroups"] = names
    return params


def instance_view(raw: Mapping[str, Any], region: str, price: float | None) -> ProviderInstance | None:
    """An EC2 instance description as the contract lists it; None for a terminated one."""
    state = raw.get("State", {})
    status = STATUS_BY_CODE.get(int(state.get("Code", 48)) & 0xFF)
    if status is None:
        return None
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    return ProviderInstance(
        id=raw["InstanceId"], pool=tags.get(POOL_TAG, ""), size=raw.get("InstanceType", ""),
        region=raw.get("Placement", {}).get("AvailabilityZone", region), status=status,
        created_at=raw.get("LaunchTime"), token=tags.get(TOKEN_TAG), name=tags.get("Name", ""),
        spot=raw.get("InstanceLifecycle") == "spot", price_hourly_usd=price,
        tags=tags, private_ip=raw.get("PrivateIpAddress") or None, public_ip=raw.get("PublicIpAddress") or None,
        draining=DRAINING_TAG in tags,
    )
