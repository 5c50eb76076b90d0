"""DESIGN.md's "Never" rule for tests: no test replaces a method of the code under test to get
between two steps (a fault is injected through a part the code is handed: a provider, a store,
a signal reader, a clock).  The import rules are checked by `lint-imports` (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _methods() -> set[str]:
    """Every method name defined by a class in fleet/ or providers/."""
    names = set()
    for path in [*ROOT.glob("fleet/**/*.py"), *ROOT.glob("providers/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names |= {f.name for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    return names - {"__init__"}


def _project_names(tree: ast.Module) -> set[str]:
    """Names a test module imported from fleet or providers (modules, classes, functions)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("fleet", "providers"):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names
                      if a.name.split(".")[0] in ("fleet", "providers")}
    return names


def _violations(path: Path, methods: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    ours = _project_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setattr" \
                and node.args:
            target = node.args[0]
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            named = isinstance(root, ast.Name) and root.id in ours
            dotted = isinstance(target, ast.Constant) and str(target.value).startswith(("fleet.", "providers."))
            if named or dotted:
                found.append(f"{path.name}:{node.lineno}: setattr on {ast.unparse(target)}")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                own = isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and target.value.id == "self"  # a test double's own attribute
                if isinstance(target, ast.Attribute) and target.attr in methods and not own \
                        and isinstance(node.value, ast.Name | ast.Lambda):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(target)} replaced")
    return found


def test_no_test_replaces_a_method_of_the_code_under_test():
    methods = _methods()
    found = [v for path in sorted((ROOT / "tests").glob("*.py")) if path.name != Path(__file__).name
             for v in _violations(path, methods)]
    assert found == []


def test_the_rule_sees_a_replaced_method(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("from fleet.store.repo import Store\n"
                      "def test_x(monkeypatch, ctl):\n"
                      "    monkeypatch.setattr(Store, 'move', None)\n"
                      "    ctl.tick = lambda: None\n")
    assert len(_violations(sample, {"tick"})) == 2
