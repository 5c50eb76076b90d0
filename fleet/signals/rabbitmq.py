"""`rabbitmq`: the messages waiting in a queue.

- Over AMQP (default): a passive `queue.declare` (pika) returns the count of *ready*
  messages; it cannot count unacknowledged ones, so `include_unacked` needs the
  management API (the config refuses it otherwise).  A missing queue is a missing
  reading (the broker answers 404 NOT_FOUND and closes the channel).
- Over the management HTTP API (`management_url`): GET /api/queues/{vhost}/{queue} →
  `messages_ready` (+ `messages_unacknowledged`).  These are statistics the broker
  refreshes every few seconds (collect_statistics_interval), so their age is unknown.

Credentials: the user and password in the URLs, the password replaced by the env var
`password_env` when set.  Descriptions and reasons never contain the password.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import quote, unquote, urlsplit

import httpx
import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from fleet.config import RabbitMQSource
from fleet.signals.base import SourceReading
from fleet.signals.http_json import finite_number, http_failure, public_url, redact

# pika logs every failed connection at ERROR with a traceback; the reading carries the reason.
logging.getLogger("pika").setLevel(logging.CRITICAL)


def vhost_of(amqp_url: str) -> str:
    """The vhost of an AMQP URL as pika reads it: `/%2F` and an empty path are `/`."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def describe(cfg: RabbitMQSource) -> str:
    via = public_url(cfg.management_url) if cfg.management_url else public_url(cfg.url)
    counts = "ready+unacked" if cfg.include_unacked else "ready"
    return f"rabbitmq queue {cfg.queue} ({counts}) @ {via}"


def _password(cfg: RabbitMQSource) -> tuple[str | None, str | None]:
    """(password from password_env, error)."""
    if cfg.password_env is None:
        return None, None
    password = os.environ.get(cfg.password_env)
    if not password:
        return None, f"environment variable {cfg.password_env} (password_env) is not set"
    return password, None


def read(cfg: RabbitMQSource) -> SourceReading:
    where = describe(cfg)
    password, error = _password(cfg)
    if error:
        return SourceReading.missing(where, error)
    secrets = (password, urlsplit(cfg.url).password,
               urlsplit(cfg.management_url).password if cfg.management_url else None)
    if cfg.management_url:
        result = _read_management(cfg, password)
    else:
        result = _read_amqp(cfg, password)
    if isinstance(result, str):
        return SourceReading.missing(where, redact(result, *secrets))
    return SourceReading(value=result[0], source=where, age_s=result[1])


def _read_amqp(cfg: RabbitMQSource, password: str | None) -> tuple[float, float | None] | str:
    try:
        params = pika.URLParameters(cfg.url)
    except Exception as exc:  # pika raises assorted types for a bad URL
        return f"invalid AMQP url {public_url(cfg.url)}: {type(exc).__name__}"
    if password is not None:
        params.credentials = pika.PlainCredentials(params.credentials.username, password)
    params.connection_attempts = 1
    params.socket_timeout = cfg.timeout_s  # TCP connect
    params.stack_timeout = cfg.timeout_s  # connect + AMQP handshake + open, as a whole
    params.blocked_connection_timeout = cfg.timeout_s  # a broker under a resource alarm
    params.heartbeat = 0  # a one-shot connection needs none
    what = f"declaring queue {cfg.queue!r} (passive) on {public_url(cfg.url)}"
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError as exc:
        return f"{what}: authentication failed: {exc}"
    except pika.exceptions.ProbableAccessDeniedError as exc:
        return f"{what}: access denied (vhost {params.virtual_host!r}): {exc}"
    except (pika.exceptions.AMQPConnectionError, AMQPConnectorException) as exc:
        reason = repr(exc)
        if "Timeout" in reason or "timed out" in reason:
            return f"{what}: timed out after {cfg.timeout_s:g}s: {reason}"
        return f"{what}: cannot connect: {reason}"
    except Exception as exc:
        return f"{what}: {type(exc).__name__}: {exc}"
    try:
        channel = connection.channel()
        ok = channel.queue_declare(queue=cfg.queue, passive=True)
        return float(ok.method.message_count), 0.0
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return f"queue {cfg.queue!r} does not exist in vhost {params.virtual_host!r}"
        return f"{what}: the broker closed the channel: {exc.reply_code} {exc.reply_text}"
    except pika.exceptions.AMQPError as exc:
        return f"{what}: {type(exc).__name__}: {exc!r}"
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # already closed by the broker or the failure


def _management_auth(cfg: RabbitMQSource, password: str | None) -> tuple[str, str]:
    """User and password: the management URL's, else the AMQP URL's; password_env wins."""
    assert cfg.management_url is not None
    mgmt, amqp = urlsplit(cfg.management_url), urlsplit(cfg.url)
    source = mgmt if mgmt.username else amqp
    user = unquote(source.username or "guest")
    secret = password if password is not None else unquote(source.password or "guest")
    return user, secret


def _read_management(cfg: RabbitMQSource, password: str | None) -> tuple[float, float | None] | str:
    assert cfg.management_url is not None
    base = public_url(cfg.management_url).rstrip("/")
    vhost = vhost_of(cfg.url)
    url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(cfg.queue, safe='')}"
    what = f"GET {url}"
    try:
        response = httpx.get(url, auth=_management_auth(cfg, password), timeout=cfg.timeout_s)
    except httpx.HTTPError as exc:
        return http_failure(exc, what, cfg.timeout_s)
    if response.status_code == 404:
        return f"queue {cfg.queue!r} does not exist in vhost {vhost!r} (management API 404)"
    if response.status_code in (401, 403):
        return f"{what}: HTTP {response.status_code}: check the user and password_env"
    if response.status_code != 200:
        return f"{what}: HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError as exc:
        return f"{what}: not JSON: {exc}"
    fields = ["messages_ready"] + (["messages_unacknowledged"] if cfg.include_unacked else [])
    total = 0.0
    for name in fields:
        number = finite_number(body.get(name)) if isinstance(body, dict) else None
        if number is None:
            # a queue's counters appear only after the broker's first statistics emission
            return f"{what}: no numeric {name} in the response (statistics not emitted yet?)"
        total += number
    return total, None
