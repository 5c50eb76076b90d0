"""Pydantic's errors as the user reads them: `file: key.path: message`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any


class ConfigError(Exception):
    """Raised with every problem found, each line `file: key.path: message`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# names pydantic gives the branches of a union in an error's location: never keys the user wrote
_BRANCH = re.compile(r"^(function-|tagged-union|constrained-|[a-z]+\[)")
_TYPE_NAMES = ("str", "float", "int", "dict[str,float]", "tuple[str, ...]")


def loc_to_path(loc: tuple[Any, ...], data: Any) -> str:
    """('pools', 1, 'signals', 0, 'queue_depth', 'target_per_machine') → pools[1].signals[0].target_per_machine.

    Pydantic puts union tags (discriminator values, type names) into the location;
    walk the real data so only keys the user wrote appear.
    """
    out = ""
    node = data
    for part in loc:
        piece, node = _step(part, node)
        out += piece
    return out.removeprefix(".") or "(top level)"


def _step(part: Any, node: Any) -> tuple[str, Any]:
    """One location part: its text in the path ("" for a union tag) and the data under it."""
    if isinstance(part, int):
        inside = isinstance(node, list | tuple) and part < len(node)
        return f"[{part}]", node[part] if inside else None
    if isinstance(node, dict) and part in node:
        return f".{part}", node[part]
    if isinstance(node, dict) and not _is_union_tag(part, node):
        return f".{part}", node  # a missing required key: named, the data stays where it is
    return "", node


def _is_union_tag(part: Any, node: Mapping[str, Any]) -> bool:
    return bool(_BRANCH.match(str(part))) or part in _TYPE_NAMES or part in (node.get("kind"), node.get("type"))


_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
           "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}


def message(err: Mapping[str, Any]) -> str:
    """One pydantic error's message, in the config's words."""
    msg = re.sub(r"^Value error, ", "", err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling)"
    value = err.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if err["type"] in _BOUNDS:
        op, key = _BOUNDS[err["type"]]
        bound = err["ctx"][key]
        return f"must be {op} {bound:g}" if isinstance(bound, int | float) else f"must be {op} {bound}"
    return msg[:1].lower() + msg[1:]
