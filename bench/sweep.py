"""Tuning aid for fleet/policy/latency.py: replay the fleet policy alone with some of its
constants (fleet/policy/settings.py `LatencySettings`) overridden, on bench/scaling.py's scenarios, over several jitter seeds.

    /work/venv/bin/python bench/sweep.py 'BETA=1.0,RISE_QUANTILE=0.9' 'BETA=0.5' [--seeds 1 2 3] [--tune]

Each argument is one setting (empty: the shipped constants); every setting is printed as
`trace cost/oracle / SLO` per scenario and seed, beside the baselines of the same scenario
(hindsight static, static-tuned, hpa).  `--tune` judges the tuning part (the second half of the
requests before bench/scaling.py's split) instead of the judged part: tune there, then check the
judged part once.  By hand, like every benchmark; it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scaling  # noqa: E402

from fleet.policy.settings import DEFAULT, LatencySettings  # noqa: E402
from fleet.sim.run import Scenario, run_all, slo_attainment  # noqa: E402

FIELDS = {f.name for f in dataclasses.fields(LatencySettings)}


def parse_setting(text: str) -> dict[str, float]:
    """`NAME=value,...` as `LatencySettings` fields (`BETA` is `beta`, `_MAX_SAMPLES` is `max_samples`)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        field = name.strip().lstrip("_").lower()
        if field not in FIELDS or not name.isupper():
            raise SystemExit(f"{part!r}: fleet/policy/settings.py LatencySettings has no field {field!r}")
        out[name] = type(getattr(DEFAULT, field))(ast.literal_eval(value))
    return out


def settings_of(setting: dict[str, float]) -> LatencySettings:
    return dataclasses.replace(DEFAULT, **{name.lstrip("_").lower(): value for name, value in setting.items()})


def figure(scn: Scenario, policies: tuple[str, ...]) -> dict[str, str]:
    results, bound = run_all(scn, policies)
    if "static" in policies:
        results.append(scaling.static_tuned(scn))
    end = max(r.end_s for r in results)
    oracle = bound.cost_between(scn.warmup_s, end)
    return {r.policy: f"{r.cost_between(scn.warmup_s, end) / oracle:.2f}/{slo_attainment(scn, r):.2%}"
            for r in results}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", nargs="*", default=[""])
    parser.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "traces")
    parser.add_argument("--only", action="append", choices=sorted(scaling.TRACES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    for seed in args.seeds:
        for name in args.only or scaling.TRACES:
            scn = scaling.prepare(name, args.traces, 0.5, seed=seed)
            if args.tune:
                scn = scaling.tune_part(scn)
            base = figure(scn, ("static", "hpa"))
            print(f"{name} seed {seed}: " + "  ".join(f"{p} {v}" for p, v in base.items()))
            for setting in settings:
                tuned = dataclasses.replace(scn, policy_settings=settings_of(setting))
                label = ",".join(f"{k}={v:g}" for k, v in setting.items()) or "shipped"
                print(f"   fleet {label}: {figure(tuned, ('fleet',))['fleet']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
