"""`http_json`: GET a URL and take the number at a dotted path (in-house queue services).

`queues.imagegen.depth` walks objects by key; a segment that is an integer indexes a
list (`workers.0.pending`).  Only a finite JSON number is a value: a boolean, a string,
null, a missing key or an error status is a missing signal, never zero.

The small HTTP helpers here (`public_url`, `redact`, `http_failure`, `bearer_headers`)
are shared by the Prometheus and RabbitMQ-management sources.
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from fleet.config import HttpJsonSource
from fleet.signals.base import SourceReading


def public_url(url: str) -> str:
    """The URL without user, password and query string: safe to show in a plan or a log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, *secrets: str | None) -> str:
    """Belt and braces: drop any secret a library might have echoed into an error text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def http_failure(exc: httpx.HTTPError, what: str, timeout_s: float) -> str:
    """A reason for a transport failure that names what was being done."""
    if isinstance(exc, httpx.TimeoutException):
        return f"{what}: timed out after {timeout_s:g}s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"{what}: cannot connect: {exc}"
    return f"{what}: {type(exc).__name__}: {exc}"


def bearer_headers(headers: dict[str, str], token_env: str | None) -> tuple[dict[str, str], str | None]:
    """Config headers plus `Authorization: Bearer` from the env var; (headers, error)."""
    out = dict(headers)
    if token_env is None:
        return out, None
    token = os.environ.get(token_env)
    if not token:
        return out, f"environment variable {token_env} (token_env) is not set"
    out["Authorization"] = f"Bearer {token}"
    return out, None


def finite_number(value: Any) -> float | None:
    """A JSON number that is finite; bool is not a number (True would read as 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def walk(data: Any, path: str) -> tuple[Any, str | None]:
    """Follow a dotted path; (value, error)."""
    node = data
    walked: list[str] = []
    for segment in path.split("."):
        here = ".".join(walked) or "the document root"
        if isinstance(node, dict):
            if segment not in node:
                keys = ", ".join(sorted(map(str, node))[:10])
                return None, f"key {segment!r} not found at {here} (keys: {keys or 'none'})"
            node = node[segment]
        elif isinstance(node, list):
            try:
                index = int(segment)
            except ValueError:
                return None, f"{here} is a list; {segment!r} is not an index"
            if not -len(node) <= index < len(node):
                return None, f"index {index} out of range at {here} (length {len(node)})"
            node = node[index]
        else:
            return None, f"cannot take {segment!r} of {here}: it is a {_json_type(node)}"
        walked.append(segment)
    return node, None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return "number"


def read(cfg: HttpJsonSource) -> SourceReading:
    url = public_url(cfg.url)
    where = f"http_json {url} path {cfg.path}"
    headers, error = bearer_headers(cfg.headers, cfg.token_env)
    if error:
        return SourceReading.missing(where, error)
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    try:
        with httpx.Client(timeout=cfg.timeout_s, follow_redirects=True) as client:
            response = client.get(cfg.url, headers=headers)
    except httpx.HTTPError as exc:
        return SourceReading.missing(where, redact(http_failure(exc, f"GET {url}", cfg.timeout_s), token))
    if response.status_code != 200:
        return SourceReading.missing(where, f"GET {url} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError as exc:
        return SourceReading.missing(where, f"GET {url} did not return JSON: {exc}")
    value, error = walk(data, cfg.path)
    if error:
        return SourceReading.missing(where, error)
    number = finite_number(value)
    if number is None:
        return SourceReading.missing(where, f"{cfg.path} is not a finite number: {_json_type(value)} {value!r:.60}")
    # The service's own freshness is unknown, so no age.
    return SourceReading(value=number, source=where)
