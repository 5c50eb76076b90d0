"""The numbers of a replay, as a table or as JSON (keys are a contract: see issue 6)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fleet.sim.engine import RunResult
from fleet.sim.oracle import LowerBound
from fleet.sim.run import Scenario, slo_attainment

KEYS = ("policy", "cost_usd", "slo_attainment", "wait_p50_s", "wait_p95_s", "wait_p99_s", "machine_hours",
        "launches", "peak_machines", "budget_or_quota_violations", "requests_cut")


def peak_machines(result: RunResult) -> int:
    """Most machines alive (billed) at once."""
    events = sorted([(t, 1) for t in result.created] + [(t, -1) for t in result.gone])
    live = peak = 0
    for _, step in events:  # a destroy at the same instant as a create is counted first
        live += step
        peak = max(peak, live)
    return peak


def _pct(waits: np.ndarray, q: float) -> float:
    if len(waits) == 0:
        return 0.0
    value = float(np.percentile(waits, q))
    return value if np.isfinite(value) else float("inf")


def _round(value: float) -> float | None:
    """Waits of requests never served are infinite: JSON says null."""
    return round(value, 3) if np.isfinite(value) else None


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def policy_row(scn: Scenario, result: RunResult, end: float | None = None) -> dict[str, Any]:
    """One policy's figures.  With `scn.judge_from_s` set (`--judge-from`), cost, machine hours
    and launches count only [judge_from_s, end] (machine time pro rata), as the SLO does."""
    counted = scn.trace.arrival_s >= scn.warmup_s
    waits = result.waits[counted] if counted.any() else result.waits
    if scn.judge_from_s > 0:
        start, end = scn.judge_from_s, result.end_s if end is None else end
        cost, seconds = result.cost_between(start, end), result.machine_seconds_between(start, end)
        launches = sum(1 for c in result.created if c >= start)
        cut = sum(1 for r in result.cut_requests if scn.trace.arrival_s[r] >= start)
    else:
        cost, launches = result.cost_usd, len(result.created)
        seconds = result.machine_seconds_between(-math.inf, math.inf)
        cut = len(result.cut_requests)
    return {
        "policy": result.policy,
        "cost_usd": round(cost, 4),
        "slo_attainment": round(slo_attainment(scn, result), 6),
        "wait_p50_s": _round(_pct(waits, 50)),
        "wait_p95_s": _round(_pct(waits, 95)),
        "wait_p99_s": _round(_pct(waits, 99)),
        "machine_hours": round(seconds / 3600.0, 3),
        "launches": launches,
        "peak_machines": peak_machines(result),
        "budget_or_quota_violations": result.violations,
        # requests a destroyed machine cut off and the queue served again (their wait counts from
        # their first arrival); policies that drain, as the baselines do, cut none
        "requests_cut": cut,
    }


def work_between(scn: Scenario, start: float, end: float) -> float:
    """The trace's GPU seconds inside [start, end] (served at arrival), at the price, in USD."""
    a, s = scn.trace.arrival_s, scn.trace.service_s
    inside = np.clip(np.minimum(a + s, end) - np.maximum(a, start), 0.0, None).sum()
    return float(inside) / scn.pool.slots_per_machine * scn.price / 3600.0


def report(scn: Scenario, results: Sequence[RunResult], bound: LowerBound) -> dict[str, Any]:
    if scn.judge_from_s <= 0:
        return {"policies": [policy_row(scn, r) for r in results],
                "lower_bound": {"oracle_usd": round(bound.oracle_usd, 4), "work_usd": round(bound.work_usd, 4)}}
    # judged from a point: every figure over the same window, the oracle's too
    start, end = scn.judge_from_s, max(r.end_s for r in results)
    return {"policies": [policy_row(scn, r, end) for r in results],
            "lower_bound": {"oracle_usd": round(bound.cost_between(start, end), 4),
                            "work_usd": round(work_between(scn, start, end), 4)},
            "judged_from_s": round(start, 3)}


def describe(scn: Scenario) -> list[str]:
    pool, trace = scn.pool, scn.trace
    lines = [
        f"trace {trace.name} ({trace.format}): {len(trace):,} requests over {trace.span_s / 3600:.2f} h, "
        f"mean {trace.mean_busy_slots() / pool.slots_per_machine:.2f} busy machines",
        f"pool {pool.name}: {pool.size[0]} at ${scn.price:g}/h, {pool.slots_per_machine} slot(s) per machine, "
        f"boot {pool.boot_seconds:g}s, latency budget {scn.budget_s:g}s, tick {scn.tick_s:g}s, "
        f"signal lag {pool.simulation.signal_lag_s:g}s",
    ]
    if trace.model:
        lines.append(f"throughput model: {trace.model}")
    if scn.machine_work:
        lines.append("per-machine work: fleet sees it (as `fleet run` with [pools.machine_work]) "
                     "and removes idle machines only")
    else:
        lines.append("per-machine work: fleet does not see it (no [pools.machine_work], as `fleet run`); "
                     "a busy machine it removes is cut off, as there: its requests are retried (`cut`)")
    if scn.judge_from_s > 0:
        lines.append(f"judged from {scn.judge_from_s:g}s (--judge-from; the policies learn before it): SLO, "
                     f"cost, machine hours, launches and the lower bound count from there")
    else:
        lines.append(f"SLO counted on requests arriving after the first {scn.warmup_s:g}s; cost from the start")
    return lines


def table(scn: Scenario, data: dict[str, Any], notes: Sequence[str] = ()) -> str:
    bound = data["lower_bound"]
    oracle = bound["oracle_usd"]
    head = ("policy", "cost $", "x oracle", "SLO", "wait p50", "p95", "p99", "mach-h", "launches", "peak",
            "violations", "cut")
    rows = []
    for row in data["policies"]:
        rows.append((row["policy"], f"{row['cost_usd']:.2f}",
                     f"{row['cost_usd'] / oracle:.2f}" if oracle > 0 else "-",
                     f"{row['slo_attainment']:.2%}", _secs(row["wait_p50_s"]), _secs(row["wait_p95_s"]),
                     _secs(row["wait_p99_s"]), f"{row['machine_hours']:.2f}", str(row["launches"]),
                     str(row["peak_machines"]), str(row["budget_or_quota_violations"]), str(row["requests_cut"])))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [*describe(scn), "", fmt.format(*head), *(fmt.format(*r) for r in rows), "",
           f"lower bound: oracle ${oracle:.2f} (clairvoyant zero-wait fleet), work ${bound['work_usd']:.2f} "
           f"(GPU seconds at the price)"]
    out.extend(f"note: {n}" for n in notes)
    return "\n".join(out)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, allow_nan=False)
