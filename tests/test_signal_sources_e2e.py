"""The `fleet` command end to end with real signal sources: Redis queues (the machine's
Redis), the embedded simulated cloud and a SQLite database.  Each command runs the real
CLI app in-process (typer's runner): a subprocess per command costs ~1.5 s of imports
on a 2-core machine, and state crosses commands only through the files, as it would."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleet.cli import app
from tests import builders
from tests.servers import REDIS_HOST, REDIS_PORT, free_port, need_tcp

pytestmark = pytest.mark.redis
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def queue():
    """A unique Redis list key, deleted afterwards."""
    need_tcp(REDIS_HOST, REDIS_PORT, "Redis")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    key = f"fleet-e2e:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key)
    client.close()


def write_config(path: Path, signals: list[dict[str, Any]], **overrides: Any) -> Path:
    settings = {"region": "tor1", "min": 0, "max": 10, "max_step_up": 10, "scale_up_cooldown_s": 0,
                "scale_down_cooldown_s": 0, "scale_down_stabilization_s": 0, "tolerance": 0.0} | overrides
    return builders.write_config(path, builders.pool("gen", signals=signals, **settings),
                                 fleet={"name": "e2e", "database_url": "sqlite:///fleet.db", "metrics_port": 0})


def fleet(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"fleet {' '.join(args)} failed:\n{result.output}"
    return result.stdout


def plan(config: Path) -> dict[str, Any]:
    return json.loads(fleet("plan", "--config", str(config), "--output", "json"))


def machines(config: Path) -> int:
    doc = json.loads(fleet("status", "--config", str(config), "--output", "json"))
    (pool,) = [p for p in doc["pools"] if p["pool"] == "gen"]
    return sum(n for state, n in pool["machines"].items() if state != "terminated")


def redis_source(key: str, url: str = REDIS_URL) -> dict[str, Any]:
    return {"type": "redis", "url": url, "key": key, "mode": "list", "timeout_s": 0.5}


def test_run_once_scales_to_the_redis_list_length_over_target(queue, tmp_path):
    client, key = queue
    client.rpush(key, *range(10))
    config = write_config(tmp_path / "fleet.toml", [
        {"kind": "queue_depth", "target_per_machine": 4, "source": redis_source(key)}])
    fleet("run", "--config", str(config), "--once")
    assert machines(config) == 3  # ceil(10 / 4)


def test_backlog_seconds_sizes_the_pool_to_drain_in_time(queue, tmp_path):
    client, key = queue
    client.rpush(key, *range(25))
    config = write_config(tmp_path / "fleet.toml", [
        {"kind": "backlog_seconds", "seconds_per_item": 90, "drain_seconds": 600, "source": redis_source(key)}])
    fleet("run", "--config", str(config), "--once")
    assert machines(config) == 4  # ceil(25 items x 90 s / 600 s) = ceil(3.75)


def test_a_pool_whose_redis_is_down_holds_and_the_plan_says_why(queue, tmp_path):
    client, key = queue
    client.rpush(key, *range(8))
    live = [{"kind": "queue_depth", "target_per_machine": 4, "source": redis_source(key)}]
    config = write_config(tmp_path / "fleet.toml", live)
    fleet("run", "--config", str(config), "--once")
    assert machines(config) == 2
    client.delete(key)  # the work is done: a live read would now scale to 0

    dead_port = free_port()
    write_config(config, [{"kind": "queue_depth", "target_per_machine": 4,
                           "source": redis_source(key, f"redis://127.0.0.1:{dead_port}/0")}])
    (pool,) = plan(config)["pools"]
    assert pool["desired"] == 2 and not pool["actions"]
    (signal,) = pool["signals"]
    assert signal["value"] is None and "cannot connect" in signal["error"]
    assert any("not scaling down" in r and "cannot connect" in r for r in pool["reasons"])
    fleet("run", "--config", str(config), "--once")
    assert machines(config) == 2  # held: a missing queue is never read as empty

    write_config(config, live)  # control: the same pool with Redis back scales down
    assert plan(config)["pools"][0]["desired"] == 0


def test_plan_json_shows_every_signals_value_source_and_age(queue, tmp_path):
    client, key = queue
    client.rpush(key, *range(6))
    (tmp_path / "signals.json").write_text(json.dumps({"gpu": 0.5}))
    config = write_config(tmp_path / "fleet.toml", [
        {"kind": "queue_depth", "name": "jobs", "target_per_machine": 2, "source": redis_source(key)},
        {"kind": "backlog_seconds", "name": "backlog", "seconds_per_item": 60, "drain_seconds": 120,
         "source": redis_source(key)},
        {"kind": "gpu_utilization", "name": "util", "target": 0.7,
         "source": {"type": "file", "path": "signals.json", "key": "gpu"}},
        {"kind": "queue_depth", "name": "absent", "target_per_machine": 2,
         "source": {"type": "redis", "url": REDIS_URL, "key": f"{key}-absent", "timeout_s": 0.5}},
    ])
    (pool,) = plan(config)["pools"]
    signals = {s["name"]: s for s in pool["signals"]}
    assert signals["jobs"]["value"] == 6.0
    assert signals["jobs"]["source"] == f"redis list {key}@{REDIS_HOST}:{REDIS_PORT}/0"
    assert signals["jobs"]["age_s"] == 0.0
    assert signals["backlog"]["value"] == 6.0
    assert signals["util"]["value"] == 0.5 and signals["util"]["age_s"] is not None
    assert signals["util"]["source"].startswith("file ")
    # mode auto cannot tell a drained queue from a typo: missing, with the fix in the reason
    assert signals["absent"]["value"] is None and 'mode = "list"' in signals["absent"]["error"]
    assert pool["desired"] == 3  # max(ceil(6 / 2), ceil(6 x 60 / 120)); util has no ready machine
    assert all(set(s) >= {"value", "source", "age_s", "error"} for s in pool["signals"])
