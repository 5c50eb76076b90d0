"""TOML file → `Config`, every problem reported as `file: key.path: message`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleet.config.errors import ConfigError, loc_to_path, message
from fleet.config.root import Config

MAX_PROBLEMS = 50  # printed: past that, the file is not a config with a few mistakes
_CONTAINER = ("dict_type", "model_type", "list_type", "tuple_type", "model_attributes_type")


def parse_config(data: dict[str, Any], source: Path | str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = [(loc_to_path(tuple(err["loc"]), data), err) for err in exc.errors()]
        # a union's branches each give an error at the same key: a scalar is not named as "not a
        # table" when another branch says what is wrong with it
        scalar = {path for path, err in errors if err["type"] not in _CONTAINER}
        problems = [f"{source}: {path}: {message(err)}" for path, err in errors
                    if not (err["type"] in _CONTAINER and path in scalar)]
        unique = list(dict.fromkeys(problems))  # in order, once each (a sort by index was quadratic)
        if len(unique) > MAX_PROBLEMS:
            unique = [*unique[:MAX_PROBLEMS], f"{source}: ... and {len(unique) - MAX_PROBLEMS} more problems"]
        raise ConfigError(unique) from None
    return cfg.model_copy(update={"source_path": Path(source) if not isinstance(source, Path) else source})


MAX_CONFIG_BYTES = 1024 * 1024  # a real config is a few KiB; a bigger file is not one
MAX_DEPTH = 32  # tables and arrays inside each other: a real config nests 4 deep


def load_config(path: str | Path) -> Config:
    path = Path(path)
    raw = _read(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid TOML: nested too deeply (at most {MAX_DEPTH} levels)"]) from None
    deep = _too_deep(data, MAX_DEPTH)
    if deep is not None:
        raise ConfigError([f"{path}: {deep}: nested too deeply (at most {MAX_DEPTH} levels of tables and arrays)"])
    return parse_config(data, source=path, base_dir=path.resolve().parent)


def _read(path: Path) -> bytes:
    """The file's bytes, refusing what is not a regular file of config size (a FIFO would block)."""
    try:
        if path.is_dir():
            raise ConfigError([f"{path}: cannot read the config file: it is a directory"])
        if path.exists() and not path.is_file():
            raise ConfigError([f"{path}: cannot read the config file: not a regular file"])
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: the config file is larger than {MAX_CONFIG_BYTES // 1024} KiB: "
                           "not a fleet config"])
    return raw


def _too_deep(node: Any, limit: int, where: str = "") -> str | None:
    """The key path of the first value nested deeper than `limit`, or None."""
    if limit < 0:
        path = where.removeprefix(".") or "(top level)"
        return path if len(path) <= 60 else path[:60] + "..."
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        if isinstance(child, dict | list):
            found = _too_deep(child, limit - 1, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}")
            if found is not None:
                return found
    return None

