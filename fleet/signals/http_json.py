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
from fleet.signals.base import Missing, ReadFailed, SourceReading


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


def http_failure(exc: httpx.HTTPError, what: str, timeout_s: float) -> ReadFailed:
    """A transport failure as a missing reading's code and reason, naming what was being done."""
    if isinstance(exc, httpx.TimeoutException):
        return ReadFailed(Missing.TIMEOUT, f"{what}: timed out after {timeout_s:g}s ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return ReadFailed(Missing.UNREACHABLE, f"{what}: cannot connect: {exc}")
    return ReadFailed(Missing.FAILED, f"{what}: {type(exc).__name__}: {exc}")


def status_code_of(status: int) -> Missing:
    """The code of a non-200 answer: 404 is absent, 401/403 refused credentials."""
    if status == 404:
        return Missing.ABSENT
    return Missing.AUTH if status in (401, 403) else Missing.FAILED


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


def walk(data: Any, path: str) -> Any:
    """Follow a dotted path; ReadFailed (ABSENT: no such key or index; MALFORMED: the document
    has another shape) when it leads nowhere."""
    node = data
    walked: list[str] = []
    for segment in path.split("."):
        node = _step(node, segment, ".".join(walked) or "the document root")
        walked.append(segment)
    return node


def _step(node: Any, segment: str, here: str) -> Any:
    if isinstance(node, dict):
        if segment not in node:
            keys = ", ".join(sorted(map(str, node))[:10])
            raise ReadFailed(Missing.ABSENT, f"key {segment!r} not found at {here} (keys: {keys or 'none'})")
        return node[segment]
    if not isinstance(node, list):
        raise ReadFailed(Missing.MALFORMED, f"cannot take {segment!r} of {here}: it is a {_json_type(node)}")
    try:
        index = int(segment)
    except ValueError:
        raise ReadFailed(Missing.MALFORMED, f"{here} is a list; {segment!r} is not an index") from None
    if not -len(node) <= index < len(node):
        raise ReadFailed(Missing.ABSENT, f"index {index} out of range at {here} (length {len(node)})")
    return node[index]


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
        return SourceReading.missing(where, error, Missing.AUTH)
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    try:
        number = _get_number(cfg, url, headers)
    except ReadFailed as exc:
        return SourceReading.missing(where, redact(str(exc), token), exc.code)
    # The service's own freshness is unknown, so no age.
    return SourceReading(value=number, source=where)


def _get_number(cfg: HttpJsonSource, url: str, headers: dict[str, str]) -> float:
    try:
        with httpx.Client(timeout=cfg.timeout_s, follow_redirects=True) as client:
            response = client.get(cfg.url, headers=headers)
    except httpx.HTTPError as exc:
        raise http_failure(exc, f"GET {url}", cfg.timeout_s) from exc
    if response.status_code != 200:
        raise ReadFailed(status_code_of(response.status_code), f"GET {url} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ReadFailed(Missing.MALFORMED, f"GET {url} did not return JSON: {exc}") from exc
    value = walk(data, cfg.path)
    number = finite_number(value)
    if number is None:
        raise ReadFailed(Missing.MALFORMED, f"{cfg.path} is not a finite number: {_json_type(value)} {value!r:.60}")
    return number
