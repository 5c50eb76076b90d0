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
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from fleet.config import SqsSource
from fleet.signals.base import SourceReading

WAITING = "ApproximateNumberOfMessages"
IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


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
    what = f"reading {', '.join(names)}"
    try:
        client = _client(region_of(cfg), cfg.endpoint_url, cfg.timeout_s)
        attributes = client.get_queue_attributes(QueueUrl=cfg.queue_url, AttributeNames=names)["Attributes"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code in MISSING_QUEUE:
            return SourceReading.missing(where, "queue does not exist")
        return SourceReading.missing(where, f"{what}: {code}: {error.get('Message', '')}")
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        return SourceReading.missing(where, f"{what}: timed out after {cfg.timeout_s:g}s: {exc}")
    except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable, ...
        return SourceReading.missing(where, f"{what}: {type(exc).__name__}: {exc}")
    total = 0.0
    for name in names:
        raw = attributes.get(name)
        try:
            total += int(raw)  # strings, e.g. "3"
        except (TypeError, ValueError):
            return SourceReading.missing(where, f"{what}: {name} is {raw!r}, not an integer")
    return SourceReading(value=total, source=where, age_s=0.0)
