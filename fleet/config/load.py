"""TOML file → `Config`, every problem reported as `file: key.path: message`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleet.config.errors import ConfigError, loc_to_path, message
from fleet.config.root import Config


def parse_config(data: dict[str, Any], source: Path | str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = loc_to_path(tuple(err["loc"]), data)
            problems.append(f"{source}: {path}: {message(err)}")
        raise ConfigError(sorted(set(problems), key=problems.index)) from None
    return cfg.model_copy(update={"source_path": Path(source) if not isinstance(source, Path) else source})


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(data, source=path, base_dir=path.resolve().parent)

