"""The test-config builder: its TOML reads back as the same config."""

from __future__ import annotations

import tomllib

from fleet.config import load_config
from tests.builders import (
    UNSET,
    config_data,
    config_toml,
    file_source,
    make_config,
    pool,
    queue,
    queue_wait,
    write_config,
)


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


def test_unset_leaves_a_key_out_and_the_signal_helpers_are_the_plain_dicts(tmp_path):
    bare = pool(signals=UNSET, region="tor1", min=UNSET)
    assert "signals" not in bare and "min" not in bare and bare["region"] == "tor1"
    assert make_config(bare).pools[0].signals == ()
    assert queue_wait() == {"kind": "queue_wait", "source": {"type": "static", "value": 0}}
    assert queue(file_source(tmp_path / "s.json", "q"))["source"] == {
        "type": "file", "path": str(tmp_path / "s.json"), "key": "q"}
