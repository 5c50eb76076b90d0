"""Wiring: only the commands that ask migrate; a dry run writes nothing, anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from fleet.store.db import make_engine
from tests.tick_helpers import make_rig

ROOT = Path(__file__).resolve().parents[1]


def test_plan_on_a_fresh_sqlite_url_creates_no_file(tmp_path):
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.example.toml")
    shutil.copy(ROOT / "signals.json", tmp_path / "signals.json")
    before = set(tmp_path.iterdir())
    env = {**os.environ, "FLEET_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--config", "config.example.toml",
                             "-o", "json"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (pool,) = json.loads(result.stdout)["pools"]
    assert (pool["current"], pool["desired"]) == (0, 3)  # planned as if the database were empty
    assert set(tmp_path.iterdir()) == before  # no fleet.db, no WAL, no simulated cloud state


def test_plan_on_an_empty_database_writes_no_table_and_run_upgrades_it(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    rig.set(queue=8)
    planned = rig.controller(migrate=False).tick(dry_run=True).plan.pool("imagegen")
    assert (planned.current, planned.desired) == (0, 2)
    engine = make_engine(database_url)
    assert inspect(engine).get_table_names() == []
    ran = rig.controller().tick().plan.pool("imagegen")  # the service's wiring migrates
    assert ran.desired == 2 and len(rig.cloud_ids()) == 2
    assert {"machines", "actions", "decisions"} <= set(inspect(engine).get_table_names())


def test_plan_reads_an_existing_database_without_writing(database_url, tmp_path):
    rig = make_rig(database_url, tmp_path)
    rig.set(queue=8)
    rig.controller().tick()
    engine = make_engine(database_url)
    with engine.connect() as conn:
        decisions = conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar()
    rig.clock.advance(15)
    planned = rig.controller(migrate=False).tick(dry_run=True).plan.pool("imagegen")
    assert (planned.booting, planned.desired) == (2, 2)  # it sees what the service bought
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar() == decisions
