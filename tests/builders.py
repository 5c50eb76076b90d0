"""One builder for test configs: the dict `parse_config` takes, the `Config` it gives, and the
same config as a TOML file for the CLI.

    make_config(pool(max=3, signals=[queue(7)]))                     # a Config
    config_data(pool("a"), pool("b"), budget=40)                     # the dict, to edit
    write_config(tmp_path / "fleet.toml", pool(signals=[...]),
                 fleet={"database_url": "sqlite:///fleet.db"})         # a TOML file

Defaults are the smallest valid config: fleet `t`, the simulated provider, pools of
`gpu-h100x1-80gb` with max 10 and one static queue signal.  Everything else is an override;
an override of `UNSET` leaves the key out (`pool(signals=UNSET)`: a pool with no signals).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.config import Config, parse_config

SIZE = "gpu-h100x1-80gb"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # an override that leaves its key out of the config


def _set(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not UNSET}


def static(value: float = 0) -> dict[str, Any]:
    return {"type": "static", "value": value}


def file_source(path: Path | str, key: str) -> dict[str, Any]:
    return {"type": "file", "path": str(path), "key": key}


def queue(source: dict[str, Any] | float = 0, target_per_machine: float = 4, **signal: Any) -> dict[str, Any]:
    """A `queue_depth` signal; a number is a static source."""
    src = static(source) if isinstance(source, int | float) else source
    return {"kind": "queue_depth", "target_per_machine": target_per_machine, "source": src, **signal}


def queue_wait(source: dict[str, Any] | float = 0, **signal: Any) -> dict[str, Any]:
    """A `queue_wait` signal (latency pools); a number is a static source."""
    src = static(source) if isinstance(source, int | float) else source
    return {"kind": "queue_wait", "source": src, **signal}


def pool(name: str = "p", **overrides: Any) -> dict[str, Any]:
    """A pool on the simulated provider (`signals` defaults to one static queue of 0)."""
    return _set({"name": name, "provider": "simulated", "size": SIZE, "max": 10, "signals": [queue()], **overrides})


def config_data(*pools: dict[str, Any], fleet: dict[str, Any] | None = None,
                budget: float | dict[str, Any] | None = None,
                providers: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The config as `parse_config` takes it; no pool given is one default pool.  `budget` is
    `max_hourly_usd`, or the whole `[budget]` table."""
    data: dict[str, Any] = {
        "fleet": {"name": "t", **(fleet or {})},
        "providers": providers if providers is not None else {"simulated": {}},
        "pools": list(pools) or [pool()],
        **top,
    }
    if budget is not None:
        data["budget"] = budget if isinstance(budget, dict) else {"max_hourly_usd": budget}
    return data


def make_config(*pools: dict[str, Any], **kw: Any) -> Config:
    return parse_config(config_data(*pools, **kw))


def config_toml(*pools: dict[str, Any], **kw: Any) -> str:
    return to_toml(config_data(*pools, **kw))


def write_config(path: Path, *pools: dict[str, Any], **kw: Any) -> Path:
    path.write_text(config_toml(*pools, **kw), encoding="utf-8")
    return path


# ---------------------------------------------------------------- TOML


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(path: str, data: dict[str, Any], header: str) -> list[str]:
    """`data` under `header` (`[path]` or `[[path]]`): its values, then its tables."""
    lines = [header] if header else []
    lines += [f"{_key(k)} = {_value(v)}" for k, v in data.items()
              if not isinstance(v, dict) and not _tables(v)]
    for key, value in data.items():
        name = f"{path}.{_key(key)}" if path else _key(key)
        if isinstance(value, dict):
            lines += ["", *_table(name, value, f"[{name}]")]
        elif _tables(value):
            for item in value:
                lines += ["", *_table(name, item, f"[[{name}]]")]
    return lines


def to_toml(data: dict[str, Any]) -> str:
    """A config dict as TOML: tables for dicts, arrays of tables for lists of dicts."""
    return "\n".join(_table("", data, "")).lstrip("\n") + "\n"
