"""Signal sources, one module each, and the dispatcher that reads a pool's signals.

`read_source(cfg)` dispatches on the source's `type`; modules are imported lazily so
a pool that reads only a file never imports redis, pika or boto3.
"""

from __future__ import annotations

import importlib
from typing import Any

from fleet.signals.base import Missing, SourceReading

SOURCE_MODULES = {
    "static": "fleet.signals.static",
    "file": "fleet.signals.file",
    "prometheus": "fleet.signals.prometheus",
    "redis": "fleet.signals.redis_queue",
    "rabbitmq": "fleet.signals.rabbitmq",
    "sqs": "fleet.signals.sqs",
    "http_json": "fleet.signals.http_json",
}


def read_source(cfg: Any) -> SourceReading:
    """Read one source; never raises (an unexpected failure is a missing reading)."""
    name = SOURCE_MODULES[cfg.type]
    try:
        module = importlib.import_module(name)
        return module.read(cfg)
    except Exception as exc:  # a source bug must hold the pool, not crash the tick
        return SourceReading.missing(cfg.type, f"{cfg.type} source failed: {type(exc).__name__}: {exc}",
                                     Missing.FAILED)


__all__ = ["Missing", "SourceReading", "read_source"]
