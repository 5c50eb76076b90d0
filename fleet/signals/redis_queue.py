"""`redis`: the depth of a work queue kept in Redis.

Modes:
- `list`: LLEN (Celery's and RQ's queues are lists).  A missing key is an empty queue,
  0: Celery and RQ delete the list when its last item is popped.
- `stream`: XLEN (every entry still in the stream, processed or not: trim it).  A missing
  key is an empty stream, 0.
- `group`: pending (delivered, not acknowledged) + lag (not yet delivered) of a consumer
  group, from XINFO GROUPS.  `lag` is null on Redis < 7 and after some deletions, and
  then the reading is missing: the backlog is unknown.
- `auto`: TYPE decides between list and stream.  A missing key cannot be told apart from
  a misspelled one here, so it is a missing reading that asks for an explicit mode.

One connection per read, no retries, every socket operation bounded by `timeout_s`.
"""

from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fleet.config import RedisSource
from fleet.signals.base import Missing, ReadFailed, SourceReading
from fleet.signals.http_json import redact


def describe(cfg: RedisSource, client: redis.Redis | None = None) -> str:
    """`redis list jobs@127.0.0.1:6379/0`; the password never appears."""
    where = "?"
    if client is not None:
        kw = client.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    mode = {"group": f"group {cfg.group} of stream", "auto": "key"}.get(cfg.mode, cfg.mode)
    return f"redis {mode} {cfg.key}@{where}"


def _connect(cfg: RedisSource, password: str | None) -> redis.Redis:
    extra = {"password": password} if password is not None else {}
    return redis.Redis.from_url(
        cfg.url,
        socket_timeout=cfg.timeout_s,
        socket_connect_timeout=cfg.timeout_s,
        retry=Retry(NoBackoff(), 0),  # redis-py retries by default; a tick must not wait for that
        decode_responses=True,
        **extra,
    )


def _group_backlog(client: redis.Redis, cfg: RedisSource) -> float:
    """pending + lag of the group, or ReadFailed with the reason it is unknown."""
    groups = client.xinfo_groups(cfg.key)
    for group in groups:
        if group.get("name") == cfg.group:
            lag = group.get("lag")
            if lag is None:
                raise ReadFailed(Missing.MALFORMED, f"group {cfg.group!r}: Redis reports no lag (Redis < 7, or "
                                                    "entries were deleted from the stream), so the undelivered "
                                                    "backlog is unknown")
            return float(group.get("pending", 0)) + float(lag)
    names = ", ".join(sorted(str(g.get("name")) for g in groups)) or "none"
    raise ReadFailed(Missing.ABSENT, f"no consumer group {cfg.group!r} on stream {cfg.key!r} (groups: {names})")


def _depth(client: redis.Redis, cfg: RedisSource) -> float:
    """The number, or ReadFailed with the reason there is none."""
    if cfg.mode == "list":
        return float(client.llen(cfg.key))  # 0 for a missing key; WRONGTYPE raises
    if cfg.mode == "stream":
        return float(client.xlen(cfg.key))
    kind = str(client.type(cfg.key))
    if cfg.mode == "group":
        if kind == "none":
            raise ReadFailed(Missing.ABSENT, f"stream {cfg.key!r} does not exist")
        return _group_backlog(client, cfg)
    if kind == "list":
        return float(client.llen(cfg.key))
    if kind == "stream":
        return float(client.xlen(cfg.key))
    if kind == "none":
        raise ReadFailed(Missing.ABSENT, f"key {cfg.key!r} does not exist; an emptied queue deletes its key, so "
                                         'set mode = "list" or "stream" to read a missing key as 0')
    raise ReadFailed(Missing.MALFORMED, f"key {cfg.key!r} is a {kind}, not a list or a stream")


def _password(cfg: RedisSource) -> str | None:
    if cfg.password_env is None:
        return None
    password = os.environ.get(cfg.password_env)
    if not password:
        raise ReadFailed(Missing.AUTH, f"environment variable {cfg.password_env} (password_env) is not set")
    return password


def read(cfg: RedisSource) -> SourceReading:
    try:
        password = _password(cfg)
    except ReadFailed as exc:
        return SourceReading.missing(describe(cfg), str(exc), exc.code)
    try:
        client = _connect(cfg, password)
    except ValueError as exc:  # a malformed URL
        return SourceReading.missing(describe(cfg), f"invalid redis url: {redact(str(exc), password)}", Missing.FAILED)
    where = describe(cfg, client)
    try:
        return SourceReading(value=_depth(client, cfg), source=where, age_s=0.0)  # read live from the server
    except ReadFailed as exc:
        return SourceReading.missing(where, str(exc), exc.code)
    except redis.RedisError as exc:
        code, why = _failure(exc, cfg)
        return SourceReading.missing(where, f"reading {cfg.key!r}: {redact(why, password)}", code)
    finally:
        client.close()


def _failure(exc: redis.RedisError, cfg: RedisSource) -> tuple[Missing, str]:
    if isinstance(exc, redis.TimeoutError):
        return Missing.TIMEOUT, f"timed out after {cfg.timeout_s:g}s ({exc})"
    if isinstance(exc, redis.AuthenticationError):  # a subclass of ConnectionError: name it first
        return Missing.AUTH, f"authentication failed: {exc}"
    if isinstance(exc, redis.ConnectionError):
        return Missing.UNREACHABLE, f"cannot connect: {exc}"
    if isinstance(exc, redis.ResponseError):  # WRONGTYPE, no such key, AUTH failures, ...
        return (Missing.MALFORMED if str(exc).startswith("WRONGTYPE") else Missing.FAILED), str(exc)
    return Missing.FAILED, f"{type(exc).__name__}: {exc}"
