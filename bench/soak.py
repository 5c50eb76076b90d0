"""The fault soak, long: thousands of ticks of two replicas on one pool with every fault of
tests/fault_cloud.py mixed (slow calls, lost answers, 5xx storms, lagging and forgetful
listings), demand changes, wall-clock steps of an hour or a day either way, and restarts; the
invariants of tests/soak.py are checked after every tick.  By hand, like every benchmark: it
prints figures (and every violation) and asserts nothing.

    .venv/bin/python bench/soak.py [--ticks 3000] [--seeds 1 2 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.soak import run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file per seed")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    total: Counter[str] = Counter()
    violations = 0
    for seed in args.seeds:
        tmp = Path(tempfile.mkdtemp())
        url = args.database_url or f"sqlite:///{tmp / 'soak.db'}"
        started = time.perf_counter()
        r = run_soak(url, tmp, ticks=args.ticks, seed=seed)
        total.update(r.injected)
        violations += len(r.violations)
        print(f"seed {seed}: {r.ticks} ticks in {time.perf_counter() - started:.1f}s; faults "
              f"{dict(sorted(r.injected.items()))}, clock steps {r.steps}, restarts {r.restarts}, "
              f"tick errors {dict(r.errors)}; {r.machines_made} machines; spend ${r.spend_usd:.2f} for "
              f"${r.ran_usd:.2f} that ran; violations {len(r.violations)}", flush=True)
        for v in r.violations:
            print(f"   {v}")
    print(f"all seeds: faults {dict(sorted(total.items()))} ({sum(total.values())}), violations {violations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
