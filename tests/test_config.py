"""Config validation: every error names its key path; the contract's keys parse."""

from __future__ import annotations

import pytest

from fleet.config import ConfigError, parse_config


def _data(**pool):
    return {"fleet": {"name": "t"}, "providers": {"simulated": {}},
            "pools": [{"name": "p", "provider": "simulated", "size": "gpu-h100x1-80gb", "max": 3, **pool}]}


@pytest.mark.parametrize(("pool", "expected"), [
    ({"max": -1}, "c.toml: pools[0].max: must be >= 0"),
    ({"min": 5}, "c.toml: pools[0]: max (3) must be >= min (5)"),
    ({"tolerance": 1.5}, "c.toml: pools[0].tolerance: must be < 1"),
    ({"provider": "aws"}, "pools[0].provider: 'aws' is not configured under [providers]"),
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 0, "source": {"type": "static", "value": 1}}]},
     "c.toml: pools[0].signals[0].target_per_machine: must be > 0"),
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 1, "source": {"type": "nope"}}]},
     "c.toml: pools[0].signals[0].source"),
    ({"signals": [{"kind": "queue_wait", "source": {"type": "static", "value": 1}}]},
     "a `queue_wait` signal needs `latency_budget_s`"),
])
def test_errors_name_the_key_path(pool, expected):
    data = _data(**pool)
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_subnets_apply_only_to_aws():
    data = _data(subnets=["subnet-a"])
    data["pools"][0]["provider"] = "digitalocean"
    data["providers"] = {"digitalocean": {}}
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert "`subnets` does not apply to provider 'digitalocean'" in str(err.value)


def test_queue_wait_is_accepted_on_a_latency_pool():
    cfg = parse_config(_data(latency_budget_s=5, slots_per_machine=8, signals=[
        {"kind": "queue_wait", "source": {"type": "static", "value": 0.5}}]))
    assert cfg.pools[0].signals[0].kind == "queue_wait"
