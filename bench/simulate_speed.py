"""Issue 6's speed target: replay 600,000 requests over 23 days of simulated time in under 60 s.

    /work/venv/bin/python bench/simulate_speed.py [--policy fleet] [--requests 600000] [--days 23]

The long trace is synthesized from the shipped Azure code trace (fleet/sim/data, CC-BY 4.0):
the 57-minute trace is tiled end to end over `--days`, each tile thinned with `--scale`'s own
rule (scale_trace with k < 1, a different seed per tile) so the tiles hold `--requests`
arrivals in all, and service times are scaled so the mean is about 8 busy machines (1 slot per
machine, latency budget 60 s, boot 180 s, tick 15 s: an image-generation-like pool).  Every
tick calls the real `fleet.policy.decide`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.config import parse_config  # noqa: E402
from fleet.sim.report import policy_row  # noqa: E402
from fleet.sim.run import run_all, run_policy, scenario  # noqa: E402
from fleet.sim.trace import Trace, load_trace, scale_trace  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "fleet" / "sim" / "data" / "azure_llm2023_code.csv"


def long_trace(requests: int, days: float, busy_machines: float = 8.0) -> Trace:
    base = load_trace(SHIPPED)
    tile_s = base.span_s + 1.0
    tiles = max(1, round(days * 86400.0 / tile_s))
    k = requests / (tiles * len(base))
    parts = [scale_trace(base, k, seed=i) for i in range(tiles)]
    arrival = np.concatenate([i * tile_s + p.arrival_s for i, p in enumerate(parts)])
    service = np.concatenate([p.service_s for p in parts])
    span = float(arrival[-1] + service[-1])
    service = service * (busy_machines * span / service.sum())
    return Trace(arrival, service, f"{SHIPPED.name} tiled x{tiles}, thinned to k={k:.3f}", "csv")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="fleet", choices=["fleet", "reactive", "hpa", "static"])
    parser.add_argument("--requests", type=int, default=600_000)
    parser.add_argument("--days", type=float, default=23.0)
    parser.add_argument("--compare", action="store_true",
                        help="also replay every baseline and print cost / oracle and SLO for each")
    args = parser.parse_args()
    started = time.perf_counter()
    trace = long_trace(args.requests, args.days)
    cfg = parse_config({
        "fleet": {"name": "speed", "tick_seconds": 15},
        "providers": {"simulated": {}},
        "pools": [{"name": "gpu", "provider": "simulated", "size": "gpu-h100x1-80gb", "max": 1000,
                   "boot_seconds": 180, "latency_budget_s": 60, "slots_per_machine": 1}],
    })
    scn = scenario(cfg, cfg.pools[0], trace)
    loaded = time.perf_counter()
    result = run_policy(scn, args.policy)
    replayed = time.perf_counter()
    row = policy_row(scn, result)
    ticks = len(result.series.t)
    print(f"trace: {trace.name}: {len(trace):,} requests over {trace.span_s / 86400:.1f} days, "
          f"mean {trace.mean_busy_slots():.2f} busy machines")
    print(f"policy {args.policy}: {ticks:,} ticks, {row['launches']:,} launches, SLO {row['slo_attainment']:.2%}, "
          f"${row['cost_usd']:,.0f}")
    print(f"synthesize {loaded - started:.1f}s, replay {replayed - loaded:.1f}s "
          f"({(replayed - loaded) / max(ticks, 1) * 1e6:.0f} us a tick); target: replay < 60 s: "
          f"{'met' if replayed - loaded < 60 else 'NOT met'}")
    if args.compare:
        results, bound = run_all(scn, ("fleet", "static", "reactive", "hpa"))
        print(f"oracle ${bound.oracle_usd:,.0f}, work ${bound.work_usd:,.0f}")
        for r in results:
            row = policy_row(scn, r)
            print(f"  {r.policy:<9} cost/oracle {row['cost_usd'] / bound.oracle_usd:5.2f}  "
                  f"SLO {row['slo_attainment']:7.3%}  launches {row['launches']:,}  peak {row['peak_machines']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
