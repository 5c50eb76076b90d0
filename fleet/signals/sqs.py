"""`sqs`: ApproximateNumberOfMessages (+ ApproximateNumberOfMessagesNotVisible, the
messages received and not yet deleted, when `include_in_flight`).

SQS returns the attributes as strings; AWS says they settle within about a minute of
producers stopping.  Delayed messages are not counted: no worker can take them yet.
One attempt, connect and read each bounded by `timeout_s`; credentials come from the
AWS chain (environment, profile, instance role), never from the config.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from fleet.config import SqsSource
from fleet.signals.base import Missing, ReadFailed, SourceReading

WAITING = "ApproximateNumberOfMessages"
IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
REFUSED = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
           "UnrecognizedClientException", "ExpiredToken", "InvalidSecurity"}


def region_of(cfg: SqsSource) -> str | None:
    """The configured region, else the one in an AWS queue URL (`sqs.<region>.amazonaws.com`)."""
    if cfg.region:
        return cfg.region
    match = re.match(r"https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", cfg.queue_url)
    return match.group(1) if match else None  # None: boto3's default chain decides


@lru_cache(maxsize=32)
def _client(region: str | None, endpoint_url: str | None, timeout_s: float) -> Any:
    """One client per (region, endpoint, timeout): building one costs tens of milliseconds."""
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},  # the next tick is the retry
    )
    return boto3.session.Session().client("sqs", region_name=region, endpoint_url=endpoint_url, config=config)


def read(cfg: SqsSource) -> SourceReading:
    where = f"sqs {cfg.queue_url}"
    names = [WAITING] + ([IN_FLIGHT] if cfg.include_in_flight else [])
    try:
        total = _total(_attributes(cfg, names), names)
    except ReadFailed as exc:
        return SourceReading.missing(where, f"reading {', '.join(names)}: {exc}", exc.code)
    return SourceReading(value=total, source=where, age_s=0.0)


def _attributes(cfg: SqsSource, names: list[str]) -> dict[str, Any]:
    try:
        client = _client(region_of(cfg), cfg.endpoint_url, cfg.timeout_s)
        return dict(client.get_queue_attributes(QueueUrl=cfg.queue_url, AttributeNames=names)["Attributes"])
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        if code in MISSING_QUEUE:
            raise ReadFailed(Missing.ABSENT, "queue does not exist") from None
        kind = Missing.AUTH if code in REFUSED else Missing.FAILED
        raise ReadFailed(kind, f"{code}: {error.get('Message', '')}") from None
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        raise ReadFailed(Missing.TIMEOUT, f"timed out after {cfg.timeout_s:g}s: {exc}") from None
    except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable, ...
        kind = {EndpointConnectionError: Missing.UNREACHABLE, NoCredentialsError: Missing.AUTH}.get(
            type(exc), Missing.FAILED)
        raise ReadFailed(kind, f"{type(exc).__name__}: {exc}") from None


def _total(attributes: dict[str, Any], names: list[str]) -> float:
    total = 0.0
    for name in names:
        raw: Any = attributes.get(name)
        try:
            total += int(raw)  # strings, e.g. "3"
        except (TypeError, ValueError):
            raise ReadFailed(Missing.MALFORMED, f"{name} is {raw!r}, not an integer") from None
    return total
