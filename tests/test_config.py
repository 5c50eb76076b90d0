"""Config validation: every error names its key path; the contract's keys parse."""

from __future__ import annotations

import pytest

from fleet.config import ConfigError, WarningCode, parse_config
from tests import builders


def _data(**pool):
    return builders.config_data(builders.pool(**{"max": 3, "signals": builders.UNSET, **pool}))


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
    # a 0-1 utilization read as a queue of 0.95 items would scale a busy pool down
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 4,
                   "source": {"type": "prometheus", "url": "http://p:9090", "preset": "dcgm_gpu_utilization"}}]},
     "c.toml: pools[0].signals[0]: source: preset 'dcgm_gpu_utilization' does not read a queue_depth"),
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 1},
                   "in_flight_source": {"type": "prometheus", "url": "http://p:9090", "preset": "vllm_queue_wait"}}]},
     "in_flight_source: preset 'vllm_queue_wait' does not read a queue_depth"),
    ({"signals": [{"kind": "gpu_utilization", "target": 0.7,
                   "source": {"type": "prometheus", "url": "http://p:9090", "preset": "vllm_queue"}}]},
     "presets for gpu_utilization: dcgm_gpu_utilization"),
    # a union's branch names (pydantic's "constrained-float") are not keys the user wrote
    ({"price_hourly_usd": {"gpu-h100x1-80gb": "cheap"}}, "c.toml: pools[0].price_hourly_usd.gpu-h100x1-80gb: "
                                                         "input should be a valid number"),
])
def test_errors_name_the_key_path(pool, expected):
    data = _data(**pool)
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert any(expected in p for p in err.value.problems), err.value.problems
    assert not any("constrained-" in p for p in err.value.problems), err.value.problems


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


@pytest.mark.parametrize(("kind", "key"), [("queue_depth", "target_per_machine"), ("gpu_utilization", "target")])
def test_a_sizing_target_is_required_only_without_a_latency_budget(kind, key):
    signal = {"kind": kind, "source": {"type": "static", "value": 1}}
    with pytest.raises(ConfigError) as err:
        parse_config(_data(signals=[signal]), source="c.toml")
    assert f"c.toml: pools[0]: signals[0].{key} is required" in str(err.value)
    cfg = parse_config(_data(latency_budget_s=5, slots_per_machine=8, signals=[signal]))
    assert getattr(cfg.pools[0].signals[0], key) is None


def test_the_commented_cloud_examples_parse_once_uncommented():
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "config.example.toml").read_text(encoding="utf-8")
    head, _, examples = text.partition("# Real clouds.")
    toml_line = re.compile(r"^\s*(\[|[\w.]+\s*=)")
    lines = [line[2:] for line in examples.splitlines()[1:] if line.startswith("# ") and toml_line.match(line[2:])]
    data = tomllib.loads(head.rsplit("\n# ----", 1)[0] + "\n" + "\n".join(lines))
    cfg = parse_config(data, source="config.example.toml")
    assert [p.name for p in cfg.pools] == ["imagegen", "sdxl", "llm", "chat"]
    chat = cfg.pool("chat")
    assert chat.latency_budget_s == 5 and [s.kind for s in chat.signals] == ["queue_depth", "queue_wait"]
    assert chat.signals[1].source.preset == "vllm_queue_wait"
    work = cfg.pool("llm").machine_work
    assert work is not None and work.preset == "vllm" and work.machine_label == "instance"
    assert work.drain_timeout_s == 300
    assert cfg.warnings() == ()  # the examples set no key without effect


@pytest.mark.parametrize(("pool", "expected"), [
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 4,
                   "source": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "key": "q", "timeout_s": 15}}]},
     "pools[0].signals[0].source.timeout_s: 15s must be below fleet.tick_seconds (15s)"),
    ({"signals": [{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 1},
                   "in_flight_source": {"type": "prometheus", "url": "http://p:9090", "preset": "vllm_queue",
                                        "timeout_s": 20}}]},
     "pools[0].signals[0].in_flight_source.timeout_s: 20s must be below fleet.tick_seconds"),
    ({"machine_work": {"url": "http://p:9090", "preset": "vllm", "timeout_s": 30}},
     "pools[0].machine_work.timeout_s: 30s must be below fleet.tick_seconds (15s)"),
])
def test_a_read_timeout_at_or_above_the_tick_is_refused(pool, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(_data(**pool), source="c.toml")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_a_read_timeout_below_the_tick_is_accepted():
    data = _data(signals=[{"kind": "queue_depth", "target_per_machine": 4, "source": {
        "type": "redis", "url": "redis://127.0.0.1:6379/0", "key": "q", "timeout_s": 14.9}}])
    assert parse_config(data).pools[0].signals[0].source.timeout_s == 14.9


def test_a_signals_two_timeouts_count_together():
    # collect reads source, then in_flight_source: 10 s + 10 s waits past a 15 s tick
    data = _data(signals=[{"kind": "queue_depth", "target_per_machine": 4,
                           "source": {"type": "prometheus", "url": "http://p:9090", "preset": "vllm_queue",
                                      "timeout_s": 10},
                           "in_flight_source": {"type": "prometheus", "url": "http://p:9090",
                                                "preset": "vllm_queue", "timeout_s": 10}}])
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert any("pools[0].signals[0].in_flight_source.timeout_s: 10s plus source.timeout_s 10s must be below "
               "fleet.tick_seconds (15s)" in p for p in err.value.problems), err.value.problems


# ---------------------------------------------------------------- keys with no effect


def _warnings(data):
    return [(w.path, w.code) for w in parse_config(data).warnings()]


def _latency(**pool):
    signals = pool.pop("signals", [{"kind": "queue_depth", "source": {"type": "static", "value": 1}}])
    return _data(latency_budget_s=5, slots_per_machine=8, signals=signals, **pool)


def _aws(**pool):
    data = _data(provider="aws", launch_template="lt", **pool)
    data["providers"] = {"aws": {"region": "us-east-1"}}
    return data


def _digitalocean(**pool):
    data = _data(provider="digitalocean", image="img", **pool)
    data["providers"] = {"digitalocean": {}}
    return data


_QUEUE = {"type": "static", "value": 1}


@pytest.mark.parametrize("key", ["scale_up_cooldown_s", "scale_down_cooldown_s", "scale_down_stabilization_s",
                                 "tolerance", "max_step_up", "max_step_up_percent"])
def test_a_threshold_key_on_a_latency_pool_is_named(key):
    value = 0.2 if key == "tolerance" else 5
    assert _warnings(_latency(**{key: value})) == [(f"pools[0].{key}", WarningCode.LATENCY_POOL_KEY)]
    assert _warnings(_data(**{key: value})) == []  # a threshold pool reads it


@pytest.mark.parametrize(("signal", "key"), [
    ({"kind": "queue_depth", "target_per_machine": 4, "source": _QUEUE}, "target_per_machine"),
    ({"kind": "gpu_utilization", "target": 0.7, "source": _QUEUE}, "target"),
])
def test_a_signal_target_on_a_latency_pool_is_named(signal, key):
    assert _warnings(_latency(signals=[signal])) == [(f"pools[0].signals[0].{key}", WarningCode.LATENCY_SIGNAL_TARGET)]


@pytest.mark.parametrize("signal", [
    {"kind": "memory_pressure", "target": 0.9, "source": _QUEUE},
    {"kind": "backlog_seconds", "seconds_per_item": 2, "drain_seconds": 60, "source": _QUEUE},
])
def test_a_signal_kind_the_latency_policy_does_not_read_is_named(signal):
    signals = [{"kind": "queue_depth", "source": _QUEUE}, signal]
    assert _warnings(_latency(signals=signals)) == [("pools[0].signals[1]", WarningCode.LATENCY_SIGNAL_KIND)]


@pytest.mark.parametrize("signals", [[], [{"kind": "queue_wait", "source": _QUEUE}]])
def test_a_latency_pool_with_nothing_to_size_from_is_named(signals):
    assert _warnings(_latency(signals=signals)) == [("pools[0].latency_budget_s", WarningCode.LATENCY_NO_DEMAND)]
    gpu = [*signals, {"kind": "gpu_utilization", "source": _QUEUE}]
    assert _warnings(_latency(signals=gpu)) == []


def test_slots_per_machine_on_a_threshold_pool_is_named():
    assert _warnings(_data(slots_per_machine=8)) == [("pools[0].slots_per_machine", WarningCode.THRESHOLD_SLOTS)]


def test_boot_seconds_on_a_threshold_pool_is_named_where_nothing_reads_it():
    assert _warnings(_aws(boot_seconds=120)) == [("pools[0].boot_seconds", WarningCode.THRESHOLD_BOOT_SECONDS)]
    assert _warnings(_data(boot_seconds=120)) == []  # the simulated cloud boots in it
    assert _warnings(_latency(boot_seconds=120)) == []  # the latency policy holds a boot ahead


@pytest.mark.parametrize(("pool", "path"), [
    ({"subnets": ["subnet-a"]}, "pools[0].subnets"),
    ({"image": "img"}, "pools[0].image"),
    ({"ssh_keys": ["k"]}, "pools[0].ssh_keys"),
    ({"capacity": "spot"}, "pools[0].capacity"),
])
def test_a_launch_setting_the_simulated_cloud_does_not_read_is_named(pool, path):
    assert _warnings(_data(**pool)) == [(path, WarningCode.PROVIDER_KEY)]


def test_another_providers_setting_left_at_its_default_is_named():
    # a value other than the default is refused (test_subnets_apply_only_to_aws)
    assert _warnings(_digitalocean(capacity="on-demand")) == [("pools[0].capacity", WarningCode.PROVIDER_KEY)]
    assert _warnings(_aws(ssh_keys=[])) == [("pools[0].ssh_keys", WarningCode.PROVIDER_KEY)]


def test_spot_fallback_without_spot_capacity_is_named():
    assert _warnings(_aws(spot_fallback="on-demand")) == [("pools[0].spot_fallback", WarningCode.SPOT_FALLBACK)]
    assert _warnings(_aws(capacity="spot", spot_fallback="on-demand")) == []


def test_a_provider_no_pool_uses_is_named():
    data = _data()
    data["providers"]["aws"] = {"region": "us-east-1"}
    assert _warnings(data) == [("providers.aws", WarningCode.PROVIDER_UNUSED)]


def test_metrics_host_with_the_endpoint_off_is_named():
    data = _data()
    data["fleet"].update(metrics_host="0.0.0.0", metrics_port=0)
    assert _warnings(data) == [("fleet.metrics_host", WarningCode.METRICS_OFF)]
    data["fleet"]["metrics_port"] = 9464
    assert _warnings(data) == []


def test_the_simulated_seed_without_an_error_rate_is_named():
    data = _data()
    data["providers"]["simulated"] = {"seed": 7}
    assert _warnings(data) == [("providers.simulated.seed", WarningCode.SEED_UNUSED)]
    data["providers"]["simulated"]["capacity_error_rate"] = 0.1
    assert _warnings(data) == []


def test_region_on_an_aws_pool_is_accepted_and_kept():
    cfg = parse_config(_aws(region=["us-east-1", "us-west-2"]))
    assert cfg.pools[0].region == ("us-east-1", "us-west-2") and cfg.warnings() == ()
    assert parse_config(_aws(region="us-east-1")).pools[0].region == ("us-east-1",)


def test_only_keys_the_user_set_count():
    # every default of a latency pool would be named if defaults counted
    assert _warnings(_latency()) == []
    assert _warnings(_data()) == []


def test_a_warning_reads_as_path_reason_and_code():
    (warning,) = parse_config(_data(slots_per_machine=8)).warnings()
    assert str(warning).startswith("pools[0].slots_per_machine: no effect") and str(warning).endswith(
        "[threshold_slots]")


@pytest.mark.parametrize("name", ["config.example.toml", "fleet/sim/data/simulate.toml"])
def test_the_shipped_configs_set_no_key_without_effect(name):
    from pathlib import Path

    from fleet.config import load_config

    assert load_config(Path(__file__).resolve().parents[1] / name).warnings() == ()


def _numbers(schema: dict, defs: dict, path: str = "") -> list[tuple[str, dict]]:
    """Every number or integer in a JSON schema, with its key path (union branches and $refs followed)."""
    if "$ref" in schema:
        return _numbers(defs[schema["$ref"].rsplit("/", 1)[1]], defs, path)
    out = []
    if schema.get("type") in ("number", "integer"):
        out.append((path, schema))
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        out += _numbers(branch, defs, path)
    for name, sub in schema.get("properties", {}).items():
        out += _numbers(sub, defs, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += _numbers(schema[key], defs, f"{path}[]")
    if "discriminator" in schema:
        for ref in schema["discriminator"].get("mapping", {}).values():
            out += _numbers({"$ref": ref}, defs, path)
    return out


def test_every_number_in_the_config_is_bounded_above():
    # issue 21 item 5: a time, window, price or count with no upper bound overflows later (a
    # timestamp, the ledger's Numeric(16, 6), a 32-bit column): each has one, in fleet/config/base.py
    from fleet.config import Config

    schema = Config.model_json_schema()
    numbers = _numbers(schema, schema.get("$defs", {}))
    assert len(numbers) > 60
    unbounded = sorted({p for p, s in numbers if "maximum" not in s and "exclusiveMaximum" not in s})
    assert unbounded == [], unbounded


@pytest.mark.parametrize(("section", "key", "value"), [
    ("fleet", "lease_seconds", 1e300), ("fleet", "decisions_retention_days", 1_000_000),
    ("fleet", "tick_seconds", 1e300), ("pool", "scale_down_stabilization_s", 1e300),
    ("pool", "price_hourly_usd", 1e300), ("pool", "max", 2**31), ("pool", "max_boot_seconds", float("inf")),
])
def test_time_window_and_price_keys_are_bounded(section, key, value):
    data = _data()
    (data["fleet"] if section == "fleet" else data["pools"][0])[key] = value
    where = f"fleet.{key}" if section == "fleet" else f"pools[0].{key}"
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert any(p.startswith(f"c.toml: {where}: must be") for p in err.value.problems), err.value.problems
