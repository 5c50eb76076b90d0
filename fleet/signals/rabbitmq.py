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
from fleet.signals.base import Missing, ReadFailed, SourceReading
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


def _password(cfg: RabbitMQSource) -> str | None:
    """The password from password_env (None: the URLs' own)."""
    if cfg.password_env is None:
        return None
    password = os.environ.get(cfg.password_env)
    if not password:
        raise ReadFailed(Missing.AUTH, f"environment variable {cfg.password_env} (password_env) is not set")
    return password


def read(cfg: RabbitMQSource) -> SourceReading:
    where = describe(cfg)
    secrets: tuple[str | None, ...] = (urlsplit(cfg.url).password,
                                       urlsplit(cfg.management_url).password if cfg.management_url else None)
    try:
        password = _password(cfg)
        secrets += (password,)
        value, age_s = _read_management(cfg, password) if cfg.management_url else _read_amqp(cfg, password)
    except ReadFailed as exc:
        return SourceReading.missing(where, redact(str(exc), *secrets), exc.code)
    return SourceReading(value=value, source=where, age_s=age_s)


def _parameters(cfg: RabbitMQSource, password: str | None) -> pika.URLParameters:
    try:
        params = pika.URLParameters(cfg.url)
    except Exception as exc:  # pika raises assorted types for a bad URL
        raise ReadFailed(Missing.FAILED, f"invalid AMQP url {public_url(cfg.url)}: {type(exc).__name__}") from None
    if password is not None:
        params.credentials = pika.PlainCredentials(params.credentials.username, password)
    params.connection_attempts = 1
    params.socket_timeout = cfg.timeout_s  # TCP connect
    params.stack_timeout = cfg.timeout_s  # connect + AMQP handshake + open, as a whole
    params.blocked_connection_timeout = cfg.timeout_s  # a broker under a resource alarm
    params.heartbeat = 0  # a one-shot connection needs none
    return params


def _connect(cfg: RabbitMQSource, params: pika.URLParameters, what: str) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError as exc:
        raise ReadFailed(Missing.AUTH, f"{what}: authentication failed: {exc}") from None
    except pika.exceptions.ProbableAccessDeniedError as exc:
        raise ReadFailed(Missing.AUTH, f"{what}: access denied (vhost {params.virtual_host!r}): {exc}") from None
    except (pika.exceptions.AMQPConnectionError, AMQPConnectorException) as exc:
        reason = repr(exc)
        if "Timeout" in reason or "timed out" in reason:
            raise ReadFailed(Missing.TIMEOUT, f"{what}: timed out after {cfg.timeout_s:g}s: {reason}") from None
        raise ReadFailed(Missing.UNREACHABLE, f"{what}: cannot connect: {reason}") from None
    except Exception as exc:
        raise ReadFailed(Missing.FAILED, f"{what}: {type(exc).__name__}: {exc}") from None


def _read_amqp(cfg: RabbitMQSource, password: str | None) -> tuple[float, float | None]:
    params = _parameters(cfg, password)
    what = f"declaring queue {cfg.queue!r} (passive) on {public_url(cfg.url)}"
    connection = _connect(cfg, params, what)
    try:
        channel = connection.channel()
        ok = channel.queue_declare(queue=cfg.queue, passive=True)
        return float(ok.method.message_count), 0.0
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            raise ReadFailed(Missing.ABSENT, f"queue {cfg.queue!r} does not exist in vhost "
                                             f"{params.virtual_host!r}") from None
        raise ReadFailed(Missing.FAILED, f"{what}: the broker closed the channel: {exc.reply_code} "
                                         f"{exc.reply_text}") from None
    except pika.exceptions.AMQPError as exc:
        raise ReadFailed(Missing.FAILED, f"{what}: {type(exc).__name__}: {exc!r}") from None
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


def _read_management(cfg: RabbitMQSource, password: str | None) -> tuple[float, float | None]:
    assert cfg.management_url is not None
    base = public_url(cfg.management_url).rstrip("/")
    vhost = vhost_of(cfg.url)
    url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(cfg.queue, safe='')}"
    what = f"GET {url}"
    try:
        response = httpx.get(url, auth=_management_auth(cfg, password), timeout=cfg.timeout_s)
    except httpx.HTTPError as exc:
        raise http_failure(exc, what, cfg.timeout_s) from None
    if response.status_code == 404:
        raise ReadFailed(Missing.ABSENT, f"queue {cfg.queue!r} does not exist in vhost {vhost!r} "
                                         "(management API 404)")
    if response.status_code in (401, 403):
        raise ReadFailed(Missing.AUTH, f"{what}: HTTP {response.status_code}: check the user and password_env")
    if response.status_code != 200:
        raise ReadFailed(Missing.FAILED, f"{what}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise ReadFailed(Missing.MALFORMED, f"{what}: not JSON: {exc}") from None
    fields = ["messages_ready"] + (["messages_unacknowledged"] if cfg.include_unacked else [])
    return sum(_counter(body, name, what) for name in fields), None


def _counter(body: object, name: str, what: str) -> float:
    number = finite_number(body.get(name)) if isinstance(body, dict) else None
    if number is None:
        # a queue's counters appear only after the broker's first statistics emission
        raise ReadFailed(Missing.MALFORMED, f"{what}: no numeric {name} in the response (statistics not "
                                            "emitted yet?)")
    return number
