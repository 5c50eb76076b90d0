"""`file`: a number at a key of a JSON object, re-read every tick.

A missing file, bad JSON, a missing key or a non-number is a missing signal, and so is a
file last written more than `max_age_s` ago, when set (the process that writes it died).
"""

from __future__ import annotations

import json
import math
import stat
import time
from typing import Any

from fleet.config import FileSource
from fleet.signals.base import Missing, ReadFailed, SourceReading


def read(cfg: FileSource) -> SourceReading:
    where = f"file {cfg.path} key {cfg.key!r}"
    try:
        data, age_s = _load(cfg)
        value = _number_at(cfg, data)
    except ReadFailed as exc:
        return SourceReading.missing(where, str(exc), exc.code)
    if cfg.max_age_s is not None and age_s > cfg.max_age_s:
        return SourceReading.missing(where, f"stale: {cfg.path} was last written {age_s:.0f}s ago "
                                            f"(max_age_s={cfg.max_age_s:g})", Missing.STALE)
    return SourceReading(value=value, source=where, age_s=age_s)


def _load(cfg: FileSource) -> tuple[Any, float]:
    """The file's JSON and how long ago it was written."""
    try:
        mode = cfg.path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO or a device would block the read (and the process) forever
            raise ReadFailed(Missing.FAILED, f"{cfg.path} is not a regular file (a FIFO, device or "
                                             "directory): not read")
        text = cfg.path.read_text(encoding="utf-8")
        age_s = max(0.0, time.time() - cfg.path.stat().st_mtime)
    except OSError as exc:
        code = Missing.ABSENT if isinstance(exc, FileNotFoundError) else Missing.FAILED
        raise ReadFailed(code, f"cannot read {cfg.path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text), age_s
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReadFailed(Missing.MALFORMED, f"{cfg.path} is not valid JSON: {exc}") from exc


def _number_at(cfg: FileSource, data: Any) -> float:
    if not isinstance(data, dict):
        raise ReadFailed(Missing.MALFORMED, f"{cfg.path} must hold a JSON object, not {type(data).__name__}")
    if cfg.key not in data:
        raise ReadFailed(Missing.ABSENT, f"key {cfg.key!r} not in {cfg.path}")
    value = data[cfg.key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReadFailed(Missing.MALFORMED, f"{cfg.path} key {cfg.key!r} is not a finite number: {value!r}")
    return float(value)
