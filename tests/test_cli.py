"""The `fleet` command as a user runs it: a subprocess on config.example.toml."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fleet.store.db import SchemaOutOfDate, ensure_schema, make_engine, upgrade
from fleet.store.repo import Store
from fleet.store.tables import metadata
from tests import builders
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def _env(base: dict[str, str]) -> dict[str, str]:
    """The subprocess imports this checkout's `fleet` (not whatever the venv has installed)."""
    path = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path}


def fleet(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = _env({**os.environ, "FLEET_LOG_LEVEL": "WARNING", "COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def demo(tmp_path) -> Path:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.example.toml")
    shutil.copy(ROOT / "signals.json", tmp_path / "signals.json")
    return tmp_path


def test_run_once_on_the_example_creates_three_machines(demo):
    result = fleet("run", "--once", "--config", "config.example.toml", cwd=demo)
    assert result.returncode == 0, result.stderr
    assert (demo / "fleet.db").exists()  # relative to the config file
    status = json.loads(fleet("status", "--config", "config.example.toml", "-o", "json", cwd=demo).stdout)
    (pool,) = status["pools"]
    assert pool["machines"] == {"booting": 3}
    assert status["burn_usd_per_hour"] == pytest.approx(3 * 3.39)

    plan = json.loads(fleet("plan", "--config", "config.example.toml", "-o", "json", cwd=demo).stdout)
    (p,) = plan["pools"]
    assert {"pool", "provider", "ready", "booting", "desired", "actions", "reasons"} <= set(p)
    assert (p["booting"], p["desired"], p["actions"]) == (3, 3, [])
    assert plan["burn_usd_per_hour"] == {"now": pytest.approx(10.17), "planned": pytest.approx(10.17)}
    assert {s["name"]: s["value"] for s in p["signals"]} == {"queue_depth[0]": 12.0, "gpu_utilization[1]": 0.5}

    history = json.loads(fleet("history", "--config", "config.example.toml", "-o", "json", cwd=demo).stdout)
    assert history[0]["desired"] == 3 and history[0]["actions"][0]["count"] == 3


def test_check_names_key_path_and_file(demo):
    cfg = demo / "config.example.toml"
    text = cfg.read_text().replace("target_per_machine = 4", "target_per_machine = 0")
    text = text.replace("max_hourly_usd = 20.0", "max_hourly_usd = 20.0\nmax_hourly_usdd = 5")
    cfg.write_text(text)
    result = fleet("check", "--config", "config.example.toml", cwd=demo)
    assert result.returncode == 1
    assert "config.example.toml: pools[0].signals[0].target_per_machine: must be > 0" in result.stderr
    assert "pools[0].max_hourly_usdd: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    run = fleet("run", "--once", "--config", "config.example.toml", cwd=demo)
    assert run.returncode == 1 and not (demo / "fleet.db").exists()


def test_errors_are_printed_as_written_not_as_markup(demo):
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace("max_hourly_usd = 20.0", 'max_hourly_usd = 20.0\n"[/bold]" = 1'))
    for command in ("check", "run"):
        result = fleet(command, *(["--once"] if command == "run" else []), "--config", "config.example.toml",
                       cwd=demo)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert 'pools[0].[/bold]: unknown key' in result.stderr


def test_check_ok_and_invalid_toml(demo):
    ok = fleet("check", "--strict", "--config", "config.example.toml", cwd=demo)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr  # the example sets no key without effect
    (demo / "broken.toml").write_text("[fleet]\nname = \n")
    result = fleet("check", "--config", "broken.toml", cwd=demo)
    assert result.returncode == 1 and "invalid TOML" in result.stderr and "line 2" in result.stderr
    missing = fleet("check", "--config", "nope.toml", cwd=demo)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_missing_digitalocean_token_is_named(demo):
    builders.write_config(demo / "do.toml",
                          builders.pool(provider="digitalocean", region="tor1", image="gpu-h100x1-base", max=2,
                                        signals=builders.UNSET),
                          fleet={"name": "d"}, providers={"digitalocean": {"token_env": "FLEET_TEST_NO_SUCH_TOKEN"}})
    env = {k: v for k, v in os.environ.items() if k != "FLEET_TEST_NO_SUCH_TOKEN"}
    for cmd in ("check", "plan"):
        result = subprocess.run([sys.executable, "-m", "fleet.cli", cmd, "--config", "do.toml"], cwd=demo,
                                env=_env(env), text=True, capture_output=True, timeout=60)
        assert result.returncode == 1
        assert "FLEET_TEST_NO_SUCH_TOKEN is not set" in result.stderr
        assert "Traceback" not in result.stderr


def test_unreachable_database_fails_clearly(demo):
    port = free_port()
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace('database_url = "sqlite:///fleet.db"',
                                           f'database_url = "postgresql+psycopg://u@127.0.0.1:{port}/x"'))
    result = fleet("run", "--once", "--config", "config.example.toml", cwd=demo)
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr and "Traceback" not in result.stderr


def test_migrations_match_the_tables(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_database_at_the_first_revision_upgrades_and_keeps_its_rows(database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0001")
    store = Store(engine)
    action = store.begin_action(token="t-1", pool="p", provider="simulated", kind="create", count=2, now=1.0)
    with pytest.raises(SchemaOutOfDate, match="fleet db upgrade"):
        ensure_schema(engine)  # an old schema is never used as it is
    upgrade(engine)
    assert store.pending_actions()[0].token == "t-1"
    store.note_attempt(action, "on-demand|g6e.xlarge|subnet-a")
    assert store.last_attempt(action) == "on-demand|g6e.xlarge|subnet-a"


def test_service_serves_metrics_and_stops_on_sigterm(demo):
    port = free_port()
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace("tick_seconds = 15", "tick_seconds = 0.5")
                   .replace("metrics_port = 9464", f"metrics_port = {port}"))
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "run", "--config", "config.example.toml"],
                            cwd=demo, env=_env({**os.environ, "FLEET_LOG_LEVEL": "INFO"}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status
                break
            except OSError:
                time.sleep(0.2)  # a real process booting: bounded wait on the real endpoint
        assert health == 200
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        assert "fleet_ticks_total" in metrics and 'fleet_pool_desired_machines{pool="imagegen"} 3.0' in metrics
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped after" in stderr
    assert "event=decision pool=imagegen" in stderr  # one key/value line per decision


def test_unknown_price_with_a_budget_is_a_config_error(demo):
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace('size = "gpu-h100x1-80gb"', 'size = "gpu-b999x1-1tb"'))
    for cmd in (["check"], ["run", "--once"]):
        result = fleet(*cmd, "--config", "config.example.toml", cwd=demo)
        assert result.returncode == 1
        assert "pools[0].price_hourly_usd: no price known for gpu-b999x1-1tb" in result.stderr


def _with_unused_keys(demo: Path) -> None:
    """The example, plus two keys that have no effect: slots_per_machine on a pool without
    latency_budget_s, and an AWS provider no pool uses."""
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace("max = 10\n", "max = 10\nslots_per_machine = 8\n")
                   .replace("[[pools]]\n", '[providers.aws]\nregion = "us-east-1"\n\n[[pools]]\n', 1))


UNUSED = [("providers.aws", "provider_unused"), ("pools[0].slots_per_machine", "threshold_slots")]


def test_check_names_each_key_without_effect_and_passes(demo):
    _with_unused_keys(demo)
    result = fleet("check", "--config", "config.example.toml", cwd=demo)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(UNUSED), lines  # one line each
    for line, (path, code) in zip(lines, UNUSED, strict=True):
        assert line.startswith(f"warning config.example.toml: {path}: no effect") and line.endswith(f"[{code}]")
    assert "2 warning(s)" in result.stdout


def test_check_strict_makes_each_warning_an_error(demo):
    _with_unused_keys(demo)
    result = fleet("check", "--strict", "--config", "config.example.toml", cwd=demo)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(UNUSED) and "Traceback" not in result.stderr, lines
    for line, (path, code) in zip(lines, UNUSED, strict=True):
        assert line.startswith(f"error config.example.toml: {path}: ") and line.endswith(f"[{code}]")


def test_plan_and_run_log_each_key_without_effect_at_start(demo):
    _with_unused_keys(demo)
    for cmd in (["plan"], ["run", "--once"]):
        result = fleet(*cmd, "--config", "config.example.toml", cwd=demo)
        assert result.returncode == 0, result.stderr
        logged = [line for line in result.stderr.splitlines() if "event=config_key_unused" in line]
        assert [(path, code) for path, code in UNUSED
                if any(f"path={path} code={code} " in line for line in logged)] == UNUSED, logged
        assert all(" WARNING " in line for line in logged)


def test_check_offline_connects_to_nothing(demo):
    # issue 21 item 9: check probes the database; --offline leaves the network alone
    port = free_port()
    cfg = demo / "config.example.toml"
    cfg.write_text(cfg.read_text().replace('database_url = "sqlite:///fleet.db"',
                                           f'database_url = "postgresql+psycopg://u@127.0.0.1:{port}/x"'))
    online = fleet("check", "--config", "config.example.toml", cwd=demo)
    assert online.returncode == 1 and "fleet.database_url: cannot open the database" in online.stderr
    assert online.stderr.rstrip().endswith("[db_unreachable]") and "Traceback" not in online.stderr
    offline = fleet("check", "--offline", "--config", "config.example.toml", cwd=demo)
    assert offline.returncode == 0, offline.stderr


def test_run_refuses_a_taken_metrics_port_before_it_serves(demo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = demo / "config.example.toml"
        cfg.write_text(cfg.read_text().replace("metrics_port = 9464", f"metrics_port = {taken.getsockname()[1]}"))
        result = fleet("run", "--config", "config.example.toml", cwd=demo, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "fleet.metrics_port:" in result.stderr and result.stderr.rstrip().endswith("[port_in_use]")
    assert not (demo / "fleet.db").exists()  # refused before the store was opened


def test_an_unknown_revision_is_one_line(demo):
    result = fleet("db", "upgrade", "--config", "config.example.toml", "--revision", "nonsense", cwd=demo)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "--revision nonsense" in result.stderr


def test_an_unforeseen_error_is_one_line_with_exit_2(capsys, monkeypatch):
    # issue 21 item 9: no traceback for any input, in any command: every command is wrapped so
    import typer

    from fleet.cli import _guarded

    @_guarded
    def explode() -> None:
        raise RecursionError("maximum recursion depth exceeded\nwhile calling a Python object")

    monkeypatch.setenv("FLEET_LOG_LEVEL", "WARNING")
    with pytest.raises(typer.Exit) as exit_:
        explode()
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err == "error: fleet explode failed: RecursionError: maximum recursion depth exceeded\n"
