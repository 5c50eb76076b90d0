"""The test-config builder: its TOML reads back as the same config."""

from __future__ import annotations

import tomllib

from fleet.config import load_config
from tests.builders import config_data, config_toml, make_config, pool, queue, write_config


def test_the_toml_is_the_dict_and_both_parse(tmp_path):
    data = config_data(
        pool("a", max=3, signals=[queue(7, name="jobs", in_flight_source={"type": "static", "value": 2})]),
        pool("b", region="tor1", machine_work={"url": "http://p:9090", "preset": "vllm",
                                               "selector": {"model_name": "m"}}),
        fleet={"database_url": "sqlite:///fleet.db", "metrics_port": 0}, budget=40)
    assert tomllib.loads(config_toml(*data["pools"], fleet=data["fleet"], budget=40)) == data
    cfg = load_config(write_config(tmp_path / "fleet.toml", *data["pools"], fleet=data["fleet"], budget=40))
    assert cfg.pools == make_config(*data["pools"], fleet=data["fleet"], budget=40).pools
    assert [p.name for p in cfg.pools] == ["a", "b"] and cfg.budget.max_hourly_usd == 40


def test_the_defaults_are_one_small_valid_pool():
    cfg = make_config()
    (only,) = cfg.pools
    assert (only.name, only.provider, only.max) == ("p", "simulated", 10)
    assert only.signals[0].source.type == "static"
