"""`fleet simulate` end to end on the shipped trace and synthetic ones: JSON keys, table, plot,
exit codes, zero violations, and the policy being the very function the service runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import fleet.controller
import fleet.policy
import fleet.sim.policies
from fleet.config import load_config
from fleet.sim.command import simulate
from fleet.sim.engine import Engine, EngineSettings, run
from fleet.sim.policies import FleetPolicy
from fleet.sim.report import KEYS, report
from fleet.sim.run import pick_pool, run_all, scenario
from fleet.sim.trace import from_arrays, load_trace
from tests import builders

DATA = Path(__file__).resolve().parents[1] / "fleet" / "sim" / "data"
SHIPPED = DATA / "azure_llm2023_code.csv"
CONFIG = DATA / "simulate.toml"

app = typer.Typer()
app.command("simulate")(simulate)


@app.command("version")
def _version() -> None:  # a second command keeps typer from collapsing the app into `simulate`
    pass


runner = CliRunner()


def write_config(tmp_path: Path, name: str = "fleet.toml", providers: dict | None = None, **pool: Any) -> Path:
    """A latency pool `gpu` with no signals; `pool` overrides its keys."""
    return builders.write_config(
        tmp_path / name,
        builders.pool("gpu", **dict(max=20, boot_seconds=120, latency_budget_s=30, slots_per_machine=1,
                                    signals=builders.UNSET) | pool),
        fleet={"tick_seconds": 15}, providers=providers)


def synthetic_trace(tmp_path: Path, n: int = 600) -> Path:
    # one 40 s job every 10 s, with a burst of 12 at 3000 s: about 4 busy machines
    rows = [(10.0 * i, 40.0) for i in range(n)] + [(3000.0 + 0.1 * i, 40.0) for i in range(12)]
    rows.sort()
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,service_s\n" + "".join(f"{a},{s}\n" for a, s in rows), encoding="utf-8")
    return path


def test_the_simulator_calls_the_services_decide() -> None:
    assert fleet.sim.policies.FleetPolicy.decide is fleet.policy.decide
    assert fleet.controller.decide is fleet.policy.decide  # the service's tick calls the same object


def test_the_fleet_replay_goes_through_decide(tmp_path: Path) -> None:
    calls = []

    class CountingPolicy(FleetPolicy):
        @staticmethod
        def decide(*args, **kwargs):
            calls.append(args[-1])
            return fleet.policy.decide(*args, **kwargs)

    cfg = load_config(write_config(tmp_path))
    pool = pick_pool(cfg, None)
    scn = scenario(cfg, pool, load_trace(synthetic_trace(tmp_path, 100)))
    run(scn.trace, scn.settings, CountingPolicy(scn.config, scn.pool, scn.price, scn.quota, scn.tick_s))
    assert len(calls) > 50 and calls[:3] == [0.0, 15.0, 30.0]


def test_json_report_keys_and_zero_violations(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--config", str(write_config(tmp_path)), "--trace",
                                 str(synthetic_trace(tmp_path)), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"policies", "lower_bound"}
    assert set(data["lower_bound"]) == {"oracle_usd", "work_usd"}
    assert [p["policy"] for p in data["policies"]] == ["fleet", "static", "reactive", "hpa"]
    for row in data["policies"]:
        assert tuple(row) == KEYS
        assert row["budget_or_quota_violations"] == 0
        assert 0.0 <= row["slo_attainment"] <= 1.0
        assert row["cost_usd"] > 0 and row["launches"] >= 1 and row["peak_machines"] >= 1
    lower = data["lower_bound"]
    assert 0 < lower["work_usd"] <= lower["oracle_usd"]
    # work: 612 jobs x 40 s at $3.39/h
    assert lower["work_usd"] == pytest.approx(612 * 40 * 3.39 / 3600, rel=1e-3)
    static = data["policies"][1]
    assert static["slo_attainment"] >= 0.99


def test_caps_hold_in_replay(tmp_path: Path) -> None:
    # quota of 3 machines and a pool budget of 2 machines' price: every policy stays within both
    cfg = write_config(tmp_path, providers={"simulated": {"quota_machines": 3}}, max_hourly_usd=6.8)
    result = runner.invoke(app, ["simulate", "--config", str(cfg), "--trace", str(synthetic_trace(tmp_path)),
                                 "--output", "json"])
    assert result.exit_code == 0, result.output
    for row in json.loads(result.stdout)["policies"]:
        assert row["budget_or_quota_violations"] == 0
        assert row["peak_machines"] <= 2  # the budget admits two machines at $3.39/h


def test_table_and_plot_on_the_shipped_trace(tmp_path: Path) -> None:
    png = tmp_path / "out" / "sim.png"
    result = runner.invoke(app, ["simulate", "--config", str(CONFIG), "--trace", str(SHIPPED),
                                 "--plot", str(png)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "azure_llm2023_code.csv (azure): 8,819 requests" in out
    assert "throughput model: service_s = 0.05 + input/8000 + output/60" in out
    for word in ("policy", "x oracle", "SLO", "fleet", "static", "reactive", "hpa", "lower bound: oracle $"):
        assert word in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_one_policy_and_scale(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--config", str(write_config(tmp_path)), "--trace",
                                 str(synthetic_trace(tmp_path, 200)), "--policy", "hpa", "--scale", "2",
                                 "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["policy"] for p in data["policies"]] == ["hpa"]


@pytest.mark.parametrize(("trace_text", "message"), [
    ("arrival_s,service_s\n0,1\n5,1\n3,1\n", "line 4: arrivals are not sorted"),
    ("arrival_s,service_s\n0,1\n-1,1\n", "line 3: negative arrival time"),
    ("arrival_s,service_s\n0,x\n", "line 2: column 'service_s' is not a number"),
    ("arrival_s,service_s\n", "the trace has no requests"),
    ("arrival,service\n0,1\n", "line 1: unknown trace format"),
])
def test_bad_trace_exits_1_naming_the_line(tmp_path: Path, trace_text: str, message: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(trace_text, encoding="utf-8")
    result = runner.invoke(app, ["simulate", "--config", str(write_config(tmp_path)), "--trace", str(trace)])
    assert result.exit_code == 1
    assert message in result.stderr
    assert str(trace) in result.stderr


def test_bad_inputs_exit_1(tmp_path: Path) -> None:
    trace = synthetic_trace(tmp_path, 10)
    cfg = write_config(tmp_path)
    cases = [
        (["--pool", "nope"], "no pool named 'nope'"),
        (["--policy", "magic"], "--policy must be one of"),
        (["--output", "yaml"], "--output must be table or json"),
        (["--scale", "-1"], "--scale must be a positive number"),
        (["--judge-from", "1"], "--judge-from must be at least 0 and below 1"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["simulate", "--config", str(cfg), "--trace", str(trace), *extra])
        assert result.exit_code == 1, extra
        assert message in result.stderr
    missing = runner.invoke(app, ["simulate", "--config", str(tmp_path / "none.toml"), "--trace", str(trace)])
    assert missing.exit_code == 1 and "cannot read the config file" in missing.stderr
    write_config(tmp_path, "nb.toml", latency_budget_s=builders.UNSET)
    result = runner.invoke(app, ["simulate", "--config", str(tmp_path / "nb.toml"), "--trace", str(trace)])
    assert result.exit_code == 1 and "set latency_budget_s" in result.stderr


def test_judge_from_counts_every_figure_over_the_judged_window(tmp_path: Path) -> None:
    from dataclasses import replace

    cfg = load_config(write_config(tmp_path))
    pool = pick_pool(cfg, None)
    trace = load_trace(synthetic_trace(tmp_path))
    scn = replace(scenario(cfg, pool, trace), judge_from_s=3000.0)
    results, bound = run_all(scn, ("static", "fleet"))
    data = report(scn, results, bound)
    start, end = 3000.0, max(r.end_s for r in results)
    rows = {row["policy"]: row for row in data["policies"]}
    static = rows["static"]
    # an always-on fleet of `peak` machines, billed over the window only
    assert static["cost_usd"] == pytest.approx(static["peak_machines"] * scn.price * (end - start) / 3600, abs=1e-4)
    assert static["machine_hours"] == pytest.approx(static["peak_machines"] * (end - start) / 3600, abs=1e-3)
    assert static["launches"] == 0  # created at t = 0, before the window
    assert data["lower_bound"]["oracle_usd"] == pytest.approx(bound.cost_between(start, end), abs=1e-4)
    assert data["lower_bound"]["oracle_usd"] < bound.oracle_usd
    # the work inside the window, by hand: each 40 s job served from its arrival, clipped to the window
    arrivals = [10.0 * i for i in range(600)] + [3000.0 + 0.1 * i for i in range(12)]
    seconds = sum(max(0.0, min(a + 40.0, end) - max(a, start)) for a in arrivals)
    assert data["lower_bound"]["work_usd"] == pytest.approx(seconds * scn.price / 3600, abs=1e-4)
    assert rows["fleet"]["launches"] == sum(1 for c in results[1].created if c >= start)
    assert data["judged_from_s"] == start


def test_judge_from_in_the_table(tmp_path: Path) -> None:
    png = tmp_path / "judged.png"
    result = runner.invoke(app, ["simulate", "--config", str(write_config(tmp_path)), "--trace",
                                 str(synthetic_trace(tmp_path, 200)), "--judge-from", "0.5", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot marks where judging starts
    # the median of 212 arrivals (every 10 s from 0, then 12 at 3000 s): between 1050 s and 1060 s
    assert "judged from 1055s (--judge-from" in result.stdout
    assert "SLO counted on requests arriving after the first" not in result.stdout


@pytest.mark.parametrize("machine_work", [True, False])
def test_the_fleet_policy_sees_each_machines_work_only_when_asked(tmp_path: Path, machine_work: bool) -> None:
    # `fleet run` has pool-level signals only; `machine_work=False` replays what it sees
    cfg = load_config(write_config(tmp_path))
    pool = pick_pool(cfg, None)
    scn = scenario(cfg, pool, from_arrays([0.0], [100.0]))
    engine = Engine(scn.trace, EngineSettings(**{**scn.settings.__dict__, "initial_ready": 2}))
    engine.advance(1.0)  # the one request runs on one of the two machines
    controller = FleetPolicy(cfg, pool, scn.price, scn.quota, scn.tick_s, machine_work=machine_work)
    work = sorted(m.work_left for m in controller._view(engine).machines)
    assert work == ([0.0, 1.0] if machine_work else [0.0, 0.0])


MACHINE_WORK = {"machine_work": {"url": "http://127.0.0.1:9090", "preset": "vllm"}}


@pytest.mark.parametrize("pool_section, expected", [({}, False), (MACHINE_WORK, True)])
def test_the_replay_sees_per_machine_work_as_the_pools_config_lets_fleet_run(
        tmp_path: Path, pool_section: dict, expected: bool) -> None:
    cfg = load_config(write_config(tmp_path, **pool_section))
    scn = scenario(cfg, pick_pool(cfg, None), from_arrays([0.0], [100.0]))
    assert scn.machine_work is expected


@pytest.mark.parametrize("flag, pool_section, sees", [
    ([], {}, False), ([], MACHINE_WORK, True), (["--machine-work"], {}, True), (["--blind"], MACHINE_WORK, False)])
def test_the_table_says_whether_the_fleet_policy_saw_each_machines_work(
        tmp_path: Path, flag: list[str], pool_section: dict, sees: bool) -> None:
    result = runner.invoke(app, ["simulate", "--config", str(write_config(tmp_path, **pool_section)),
                                 "--trace", str(synthetic_trace(tmp_path, 100)), "--policy", "fleet", *flag])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("per-machine work:"))
    assert line.startswith("per-machine work: fleet sees it" if sees else "per-machine work: fleet does not see it")


def test_a_blind_fleet_cuts_busy_machines_and_the_report_counts_it() -> None:
    # blind (as `fleet run` without [pools.machine_work]) the policy removes machines that serve
    # requests, which are cut off and retried; seeing each machine's work it removes idle ones only;
    # the baselines drain
    cut = {}
    for flag in ("--blind", "--machine-work"):
        result = runner.invoke(app, ["simulate", "--config", str(CONFIG), "--trace", str(SHIPPED), flag,
                                     "--output", "json"])
        assert result.exit_code == 0, result.output
        cut[flag] = {p["policy"]: p["requests_cut"] for p in json.loads(result.stdout)["policies"]}
    assert cut["--blind"]["fleet"] > 0
    assert cut["--machine-work"]["fleet"] == 0
    assert all(n == 0 for flag in cut for policy, n in cut[flag].items() if policy != "fleet")
