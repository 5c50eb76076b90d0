"""What every config model shares: strict frozen models, the bounded number types, names.

Every number a config holds is bounded where it enters, so no value the file accepts can
overflow later: a time or window past what a timestamp holds (`now + lease_seconds`), a price
past what the ledger's money column holds (`Numeric(16, 6)`), a count past what a 32-bit
column holds, or a string past the column it is stored in.  The bounds are far above anything
a real fleet uses; each says what it protects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"  # safe in tags, Droplet names, EC2 tokens
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"  # a Prometheus label name

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_TICK_S = DAY  # a tick, a lease
MAX_READ_S = 600.0  # one read of a signal or a provider call
MAX_WINDOW_S = 7 * DAY  # cooldowns, windows, boot and destroy timeouts, ages: far past any real one
MAX_RETENTION_DAYS = 3650.0  # `now - retention` stays a timestamp after 1970 on every platform
MAX_PRICE_USD = 10_000.0  # $/h of one machine (the dearest GPU machines cost about $100/h)
MAX_CAP_USD = 10_000_000.0  # $/h of a budget cap; the ledger's Numeric(16, 6) holds < 1e10
MAX_MACHINES = 10_000  # machines in a pool; counts are 32-bit columns
MAX_SLOTS = 10_000  # concurrent requests on one machine
MAX_TEXT = 16_384  # characters of any string in the file (a query, a URL, a header)
MAX_DB_TEXT = 64  # size and region names: String(64) columns


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
PositiveFloat = Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)]  # a plain positive number
NonNegFloat = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
TickSeconds = Annotated[float, Field(ge=0.1, le=MAX_TICK_S, allow_inf_nan=False)]
ReadSeconds = Annotated[float, Field(gt=0, le=MAX_READ_S, allow_inf_nan=False)]
WindowSeconds = Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
NonNegWindowSeconds = Annotated[float, Field(ge=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
RetentionDays = Annotated[float, Field(gt=0, le=MAX_RETENTION_DAYS, allow_inf_nan=False)]
PriceUsd = Annotated[float, Field(gt=0, le=MAX_PRICE_USD, allow_inf_nan=False)]
CapUsd = Annotated[float, Field(gt=0, le=MAX_CAP_USD, allow_inf_nan=False)]
MachineCount = Annotated[int, Field(ge=0, le=MAX_MACHINES)]
DbName = Annotated[str, Field(min_length=1, max_length=MAX_DB_TEXT)]
# the name of an environment variable (a NUL or "=" in it makes os.environ raise)
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]

# an AWS region: us-east-1, ap-southeast-5, us-gov-west-1, cn-north-1 (never a zone: us-east-1a)
AWS_REGION = r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why `url` cannot be used (its scheme not one of `schemes`, no host, a bad port), or None."""
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        return f"{url[:80]!r} is not a URL: it holds spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url[:80]!r} is not a URL: {exc}"
    if parts.scheme not in schemes:
        return f"{url[:80]!r} must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname and parts.scheme not in ("unix",):
        return f"{url[:80]!r} names no host"
    if port == 0:
        return f"{url[:80]!r}: port 0 is not a port to connect to"
    return None


def _checked_url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(url: str) -> str:
        problem = url_problem(url, schemes)
        if problem:
            raise ValueError(problem)
        return url

    return AfterValidator(check)


HttpUrl = Annotated[str, _checked_url(("http", "https"))]
RedisUrl = Annotated[str, _checked_url(("redis", "rediss", "unix"))]
AmqpUrl = Annotated[str, _checked_url(("amqp", "amqps"))]


def _checked_headers(headers: dict[str, str]) -> dict[str, str]:
    bad = [name for name, value in headers.items()
           if not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0")]
    if bad:
        raise ValueError(f"header names must be HTTP tokens and values hold no line breaks: {', '.join(bad)[:120]}")
    return headers


Headers = Annotated[dict[str, str], AfterValidator(_checked_headers)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_TEXT)
