"""The process's logging: key=value lines on stderr at FLEET_LOG_LEVEL (default INFO), and
third-party clients at WARNING unless FLEET_LOG_LEVEL=debug: at INFO the HTTP clients log every
request, the DigitalOcean client with its headers (75 lines a tick), and their URLs may carry
credentials (user:password@host, ?api_key=...)."""

from __future__ import annotations

import logging
import os
import re
import sys

LEVELS = ("debug", "info", "warning", "error", "critical")
# the clients that log requests (with their URLs or headers) at INFO or DEBUG
THIRD_PARTY = ("httpx", "httpcore", "urllib3", "botocore", "boto3", "s3transfer", "azure", "pydo", "pika",
               "redis", "alembic", "apscheduler", "tenacity", "moto", "werkzeug")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]*(:[^/@\s]*)?@")
_QUERY = re.compile(r"(?P<url>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"']+)\?[^\s#\"']*")
_BEARER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(bearer|basic)\s+)[^\s'\",}]+")


class LogLevelError(ValueError):
    pass


def level_from_env() -> int:
    """FLEET_LOG_LEVEL as a logging level; an unknown value is an error that names the values."""
    name = os.environ.get("FLEET_LOG_LEVEL", "info").strip().lower()
    if name not in LEVELS:
        raise LogLevelError(f"FLEET_LOG_LEVEL={name!r}: one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def scrub(text: str) -> str:
    """A URL's userinfo and query string, and an Authorization header's credential, removed."""
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _QUERY.sub(lambda m: m.group("url") + "?***", text)
    return _BEARER.sub(lambda m: m.group(1) + "***", text)


class _Scrubbing(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup(level: int | None = None) -> None:
    """Configure the root logger once per process (the CLI's commands call it)."""
    level = level_from_env() if level is None else level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Scrubbing("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(quiet)
