"""The code's shape, for the rooms issue: modules over 450 lines, functions over 50 lines or
cyclomatic complexity over 15 (radon), the biggest class, and mypy's error count.

    .venv/bin/python bench/shape.py [fleet providers]

By hand, like every benchmark: it prints figures and asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class

ROOT = Path(__file__).resolve().parents[1]


def main(dirs: list[str]) -> int:
    files = sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))
    long_files, funcs, classes = [], [], []
    for path in files:
        text = path.read_text()
        lines = text.count("\n")
        rel = path.relative_to(ROOT)
        if lines > 450:
            long_files.append((lines, rel))
        for block in cc_visit(text):
            length = block.endline - block.lineno + 1
            if isinstance(block, Class):
                classes.append((length, f"{rel}:{block.name}", len(block.methods)))
                for m in block.methods:
                    funcs.append((m.endline - m.lineno + 1, m.complexity, f"{rel}:{block.name}.{m.name}"))
            elif not getattr(block, "is_method", False):
                funcs.append((length, block.complexity, f"{rel}:{block.name}"))
    print("modules over 450 lines:", ", ".join(f"{r} {n}" for n, r in sorted(long_files, reverse=True)) or "none")
    big = sorted(classes, reverse=True)[:3]
    print("largest classes:", ", ".join(f"{name} {n} lines/{m} methods" for n, name, m in big))
    over = sorted((f for f in funcs if f[0] > 50 or f[1] > 15), reverse=True)
    print(f"functions over 50 lines or complexity 15: {len(over)}")
    for length, cc, name in over:
        print(f"  {name}: {length} lines, complexity {cc}")
    mypy = subprocess.run([sys.executable, "-m", "mypy", *dirs], cwd=ROOT, capture_output=True, text=True)
    print("mypy:", (mypy.stdout.strip().splitlines() or ["?"])[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["fleet", "providers"]))
