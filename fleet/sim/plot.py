"""The replay as a picture (matplotlib, Agg): demand, machines and the lower bound over time,
with the worst wait per tick beneath."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleet.sim.engine import RunResult
from fleet.sim.oracle import LowerBound
from fleet.sim.run import Scenario

_MAX_POINTS = 4000  # per line: a 23-day replay has 130,000 ticks
_HOUR = 3600.0
FORMATS = (".png", ".svg", ".pdf")  # what matplotlib writes by the file's suffix


class PlotPathError(Exception):
    """`--plot` names a place the picture cannot be written (checked before the replay)."""


def plot_target(path: str | Path, trace_name: str) -> Path:
    """Where `--plot PATH` writes: PATH, or PATH/<trace>.png for a directory, with `.png` added to
    a name without a suffix (what matplotlib would write and not say).  The directory must exist,
    or be one missing level whose parent exists and is not the filesystem root (`out/x.png` makes
    `out`; `/nonexistent/x.png` is a typo, not a folder to make)."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{Path(trace_name).stem or 'simulate'}.png"
    elif path.suffix == "":
        path = path.with_name(path.name + ".png")
    if path.suffix.lower() not in FORMATS:
        raise PlotPathError(f"--plot {path}: the picture's format comes from its suffix: one of {', '.join(FORMATS)}")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        if not os.access(parent, os.W_OK):
            raise PlotPathError(f"--plot {path}: cannot write in {parent}: permission denied")
    elif parent.exists():
        raise PlotPathError(f"--plot {path}: {parent} is not a directory")
    else:
        grand = parent.parent
        root = grand.resolve() == Path(grand.resolve().anchor)
        if not grand.is_dir() or root:
            raise PlotPathError(f"--plot {path}: the directory {parent} does not exist")
    if path.exists() and not path.is_file():
        raise PlotPathError(f"--plot {path}: exists and is not a file")
    return path


def _thin(n: int) -> slice:
    return slice(None, None, max(1, n // _MAX_POINTS))


def _zero_wait_busy(scn: Scenario) -> tuple[np.ndarray, np.ndarray]:
    arrival, service = scn.trace.arrival_s, scn.trace.service_s
    times = np.concatenate([arrival, arrival + service])
    delta = np.concatenate([np.ones(len(arrival)), -np.ones(len(arrival))])
    order = np.lexsort((delta, times))
    return times[order], np.cumsum(delta[order])


def _alive(intervals: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    if not intervals:
        return np.zeros(1), np.zeros(1)
    edges = np.array([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], dtype=float)
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]
    return edges[:, 0], np.cumsum(edges[:, 1])


def plot(scn: Scenario, results: Sequence[RunResult], bound: LowerBound, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.4]})
    colors = {r.policy: f"C{i}" for i, r in enumerate(results)}
    _demand_and_bound(top, scn, bound)
    _machines(top, results, colors)
    limit = _clip(top, results, bound)
    top.set_ylabel("machines")
    top.legend(loc="upper right", fontsize=8, ncol=2)
    top.set_title(f"{scn.trace.name}: {scn.pool.name}, boot {scn.pool.boot_seconds:g}s, "
                  f"budget {scn.budget_s:g}s, {scn.pool.slots_per_machine} slot(s) per machine")
    _waits(bottom, scn, results, colors)
    if scn.judge_from_s > 0:  # --judge-from: the figures count from this line on
        for ax in (top, bottom):
            ax.axvline(scn.judge_from_s / _HOUR, color="0.4", lw=0.8, ls="-.")
        top.text(scn.judge_from_s / _HOUR, 0.01 * limit, " judged from here", fontsize=8, color="0.3")
    bottom.set_yscale("symlog", linthresh=1.0)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("wait (s)")
    bottom.set_xlabel("hours from trace start")
    bottom.legend(loc="upper right", fontsize=8, ncol=3, markerscale=6)
    fig.tight_layout()
    path = plot_target(path, scn.trace.name)
    path.parent.mkdir(exist_ok=True)  # one level at most (plot_target)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _demand_and_bound(top: Any, scn: Scenario, bound: LowerBound) -> None:
    """Demand at zero wait, and the oracle's machines (created a boot ahead)."""
    if not len(bound.times):
        return
    slots = scn.pool.slots_per_machine
    busy = _zero_wait_busy(scn)
    cut = _thin(len(busy[0]))
    top.fill_between(busy[0][cut] / _HOUR, busy[1][cut] / slots, step="post", color="0.82",
                     label="demand (busy slots at zero wait / slots)")
    times, alive = _alive(bound.intervals)
    cut = _thin(len(times))
    top.step(times[cut] / _HOUR, alive[cut], where="post", color="black", lw=0.8,
             label="lower bound: oracle machines")


def _machines(top: Any, results: Sequence[RunResult], colors: dict[str, str]) -> None:
    for r in results:
        color = colors[r.policy]
        if not r.series.t:
            top.axhline(len(r.created), lw=1.0, ls=":", color=color, label=f"{r.policy}: {len(r.created)} always on")
            continue
        t = np.asarray(r.series.t)
        cut = _thin(len(t))
        ready = np.asarray(r.series.ready)
        total = ready + np.asarray(r.series.booting)
        top.step(t[cut] / _HOUR, total[cut], where="post", lw=1.2, color=color, label=f"{r.policy}: machines")
        if r.policy == "fleet":
            top.step(t[cut] / _HOUR, ready[cut], where="post", lw=0.8, ls="--", color=color,
                     label="fleet: ready (rest booting)")


def _clip(top: Any, results: Sequence[RunResult], bound: LowerBound) -> float:
    """A runaway baseline must not flatten the rest: clip at 1.6x the highest of the others."""
    tops = [float(np.max(bound.need))] if len(bound.need) else [1.0]
    tops += [len(r.created) if not r.series.t else
             float(np.max(np.asarray(r.series.ready) + np.asarray(r.series.booting))) for r in results
             if r.policy in ("fleet", "static")]
    limit = 1.6 * max(tops)
    top.set_ylim(0, limit)
    clipped = [r.policy for r in results if r.series.t
               and np.max(np.asarray(r.series.ready) + np.asarray(r.series.booting)) > limit]
    if clipped:
        top.text(0.01, 0.97, f"clipped: {', '.join(clipped)} (see the table)", transform=top.transAxes,
                 va="top", fontsize=8, color="0.3")
    return limit


def _waits(bottom: Any, scn: Scenario, results: Sequence[RunResult], colors: dict[str, str]) -> None:
    arrival = scn.trace.arrival_s
    for r in results:
        if not len(r.waits):
            continue
        order = _thin(len(arrival))
        waits = np.where(np.isfinite(r.waits), r.waits, np.nan)
        bottom.plot(arrival[order] / _HOUR, waits[order], ".", ms=1.5, color=colors[r.policy], label=r.policy)
    bottom.axhline(scn.budget_s, color="red", lw=0.8, label="latency budget")
