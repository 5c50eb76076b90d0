"""`fleet simulate`: replay a trace through the real policy, the baselines and the lower bound.

Registered by fleet/cli.py as `app.command("simulate")(simulate)`.  Exit codes: 0 ok,
1 bad input (config, trace, pool), with a message naming the file and line.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fleet.config import ConfigError, load_config
from fleet.sim.engine import RunResult
from fleet.sim.oracle import LowerBound
from fleet.sim.report import report, table, to_json
from fleet.sim.run import POLICIES, Scenario, ScenarioError, pick_pool, run_all, scenario
from fleet.sim.trace import FORMATS, TraceError, load_trace, scale_trace

LONG_TRACE = 100_000  # requests: show a progress bar on stderr from here


class _Progress:
    """A one-line progress bar on stderr: "fleet [########----]  62%"."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last: tuple[str, int] | None = None

    def __call__(self, policy: str, fraction: float) -> None:
        if not self.enabled:
            return
        pct = int(fraction * 100)
        if self._last == (policy, pct):
            return
        self._last = (policy, pct)
        bar = "#" * (pct // 5) + "-" * (20 - pct // 5)
        end = "\n" if pct >= 100 else ""
        sys.stderr.write(f"\r{policy:<9} [{bar}] {pct:3d}%{end}")
        sys.stderr.flush()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"fleet simulate: {message}", err=True)
    return typer.Exit(code=1)


def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="fleet config (TOML)")] = Path("fleet.toml"),
    trace: Annotated[Path, typer.Option("--trace", "-t", help="trace file to replay")] = Path("trace.csv"),
    pool: Annotated[str | None, typer.Option("--pool", help="pool to simulate (default: the only one, "
                                                            "or the only one with latency_budget_s)")] = None,
    policy: Annotated[str, typer.Option("--policy", help="fleet|static|reactive|hpa|all")] = "all",
    output: Annotated[str, typer.Option("--output", "-o", help="table|json")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG of the replay here")] = None,
    scale: Annotated[float, typer.Option("--scale", help="replay each arrival K times (seeded jitter)")] = 1.0,
    trace_format: Annotated[str, typer.Option("--format", help="auto|csv|azure|mooncake|openb")] = "auto",
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1,
                                      help="seed for --scale jitter and boot jitter")] = 0,
    judge_from: Annotated[float, typer.Option(
        "--judge-from", help="judge only requests after this share of them (0 to 1, e.g. 0.5): the "
                             "policies learn their history on the part before")] = 0.0,
    machine_work: Annotated[bool | None, typer.Option(
        "--machine-work/--blind",
        help="let the fleet policy see each machine's work, or not (default: as the pool's "
             "[pools.machine_work] lets `fleet run`)")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="progress bar on stderr (default: long traces)")] = None,
) -> None:
    """Replay a trace through the policy `fleet run` uses, next to baselines and a clairvoyant bound."""
    names = _policies(output, policy, judge_from, trace_format)
    scn = _scenario(config, trace, pool, trace_format, scale, seed, machine_work, judge_from)
    if plot is not None:  # before the replay: a bad path must not cost a replay
        plot = _plot_target(plot, scn)
    bar = _Progress(progress if progress is not None else len(scn.trace) >= LONG_TRACE)
    results, bound = run_all(scn, names, bar)
    data = report(scn, results, bound)
    notes = [n for r in results for n in r.notes]
    if plot is not None:
        notes.append(_plot(scn, results, bound, plot))
    typer.echo(to_json(data) if output == "json" else table(scn, data, notes))


def _policies(output: str, policy: str, judge_from: float, trace_format: str) -> tuple[str, ...]:
    """The policies to replay, once the options are checked."""
    if output not in ("table", "json"):
        raise _fail(f"--output must be table or json, got {output!r}")
    names = POLICIES if policy == "all" else (policy,)
    if policy != "all" and policy not in POLICIES:
        raise _fail(f"--policy must be one of {', '.join(POLICIES)}, all; got {policy!r}")
    if not 0.0 <= judge_from < 1.0:
        raise _fail(f"--judge-from must be at least 0 and below 1 (a share of the requests), got {judge_from:g}")
    if trace_format not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}; got {trace_format!r}")
    return names


def _scenario(config: Path, trace: Path, pool: str | None, trace_format: str, scale: float, seed: int,
              machine_work: bool | None, judge_from: float) -> Scenario:
    try:
        cfg = load_config(config)
        chosen = pick_pool(cfg, pool)
        loaded = load_trace(trace, trace_format, chosen.simulation)
        if scale != 1.0:
            loaded = scale_trace(loaded, scale, seed=seed)
        scn = scenario(cfg, chosen, loaded, seed=seed)
        if machine_work is not None:
            scn = replace(scn, machine_work=machine_work)
        if judge_from > 0:
            scn = replace(scn, judge_from_s=float(np.quantile(loaded.arrival_s, judge_from)))
    except ConfigError as exc:
        raise _fail(f"invalid config:\n{exc}") from None
    except (TraceError, ScenarioError) as exc:
        raise _fail(str(exc)) from None
    return scn


def _plot_target(path: Path, scn: Scenario) -> Path:
    from fleet.sim.plot import PlotPathError, plot_target

    try:
        return plot_target(path, scn.trace.name)
    except PlotPathError as exc:
        raise _fail(str(exc)) from None


def _plot(scn: Scenario, results: list[RunResult], bound: LowerBound, path: Path) -> str:
    from fleet.sim.plot import PlotPathError
    from fleet.sim.plot import plot as draw

    try:
        written = draw(scn, results, bound, path)
    except (OSError, PlotPathError) as exc:
        raise _fail(f"writing the plot {path}: {exc}") from None
    return f"plot written to {written}"
