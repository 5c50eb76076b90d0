"""What can be known about a config before its first tick, checked before it: `fleet check`
is the single gate, and `fleet run` and `fleet plan` run the same checks at start.

The config package validates the file's values (pure, no I/O); this module checks what the
values point at: files (user data, signal files), the database (its driver, its directory, a
connection, the schema revision), the metrics port, the providers (that each can be built, the
simulated cloud's state file, an endpoint that answers) and prices a budget cap needs.  Each
problem names its key path and a stable code; nothing here raises for any config.

Network probes (`network=True`) are bounded by `PROBE_TIMEOUT_S` each and only reach what the
config names: the database, a DigitalOcean `api_url` (GET /v2/account with the token), an AWS
`endpoint_url`.  The public AWS endpoints are not probed (fleet does not sign requests outside
its adapter).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet.cloud import USER_DATA_LIMIT, WiringError, build_providers, price_problems
from fleet.config import Config, FileSource, PoolConfig
from providers.base import Provider

PROBE_TIMEOUT_S = 3.0


class ProblemCode(StrEnum):
    FILE_MISSING = "file_missing"  # a file the config names cannot be read
    FILE_KIND = "file_kind"  # a FIFO, a device or a directory where a file belongs
    FILE_TOO_LARGE = "file_too_large"  # user data over the providers' 64 KiB
    FILE_NOT_TEXT = "file_not_text"  # user data that is not UTF-8
    DB_DRIVER = "db_driver"  # the URL's SQLAlchemy dialect or its DBAPI module is not installed
    DB_URL = "db_url"  # a URL SQLAlchemy cannot parse
    DB_PATH = "db_path"  # a SQLite file whose directory does not exist, or not a database
    DB_UNREACHABLE = "db_unreachable"  # no connection within the probe's timeout
    DB_SCHEMA = "db_schema"  # the database is at another schema revision
    PORT_IN_USE = "port_in_use"  # metrics_port is taken
    HOST_UNUSABLE = "host_unusable"  # metrics_host cannot be listened on
    PROVIDER = "provider"  # a provider cannot be built (token, URL, region, state)
    PRICE = "price_unknown"  # a size without a price under a budget cap
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"  # an API endpoint that does not answer
    ENDPOINT_WRONG = "endpoint_wrong"  # an endpoint that answers, but not as the API it should be
    TOKEN_REFUSED = "token_refused"  # the API refused the token


@dataclass(frozen=True)
class Problem:
    path: str  # key path, as the config errors give it
    code: ProblemCode
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.code}]"


def preflight(config: Config, *, network: bool = True, port: bool = True, store: bool = True) -> list[Problem]:
    """Every problem found, in file order; `network` probes the database and endpoints, `port`
    tries to listen on the metrics port (`fleet run` serves it; `fleet run --once` does not),
    `store` checks the database (`fleet plan` writes none, and reads a missing one as empty)."""
    problems = [*_database(config, network)] if store else []
    if port:
        problems += _metrics_port(config)
    problems += _files(config)
    providers, built = _providers(config)
    problems += built
    if network:
        problems += _endpoints(config)
    problems += [Problem(text.partition(":")[0], ProblemCode.PRICE, text.partition(": ")[2])
                 for text in price_problems(config, providers)]
    return problems


# ---------------------------------------------------------------- files


def _files(config: Config) -> Iterator[Problem]:
    for i, pool in enumerate(config.pools):
        if pool.user_data_file is not None:
            yield from _user_data(f"pools[{i}].user_data_file", pool)
        for j, signal in enumerate(pool.signals):
            for field in ("source", "in_flight_source"):
                source = getattr(signal, field, None)
                if isinstance(source, FileSource):
                    yield from _signal_file(f"pools[{i}].signals[{j}].{field}.path", source.path)


def _user_data(where: str, pool: PoolConfig) -> Iterator[Problem]:
    # read by fleet/cloud.py launch_target for every pool, before any create
    path = pool.user_data_file
    assert path is not None
    kind = _kind(path)
    if kind is not None:
        yield Problem(where, ProblemCode.FILE_KIND, f"{path} is {kind}, not a file")
        return
    try:
        with path.open("rb") as fh:
            raw = fh.read(USER_DATA_LIMIT + 1)
    except OSError as exc:
        yield Problem(where, ProblemCode.FILE_MISSING, f"cannot read {path}: {exc.strerror or exc}")
        return
    if len(raw) > USER_DATA_LIMIT:
        yield Problem(where, ProblemCode.FILE_TOO_LARGE, f"{path} is larger than {USER_DATA_LIMIT} bytes "
                                                         "(64 KiB, the providers' limit)")
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Problem(where, ProblemCode.FILE_NOT_TEXT, f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}")


def _signal_file(where: str, path: Path) -> Iterator[Problem]:
    # a file not written yet is a missing reading (its writer may start later); a FIFO or a
    # device would block the reader, a directory never reads
    kind = _kind(path)
    if kind is not None:
        yield Problem(where, ProblemCode.FILE_KIND, f"{path} is {kind}, not a regular file")


def _kind(path: Path) -> str | None:
    """What the path is when it exists and is not a regular file ("a FIFO", ...), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


# ---------------------------------------------------------------- the database


DB = "fleet.database_url"


def _database(config: Config, network: bool) -> Iterator[Problem]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url_text = config.fleet.database_url
    try:
        url = make_url(url_text)
        dialect = url.get_dialect()
    except NoSuchModuleError:  # an ArgumentError: first
        yield Problem(DB, ProblemCode.DB_DRIVER, f"no SQLAlchemy dialect or driver {url_text.partition(':')[0]!r}")
        return
    except (ArgumentError, ValueError) as exc:
        yield Problem(DB, ProblemCode.DB_URL, f"not a database URL SQLAlchemy reads: {_first_line(exc)}")
        return
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        yield Problem(DB, ProblemCode.DB_DRIVER,
                      f"the database driver {url.drivername!r} needs the module {name!r}, which is not installed"
                      + (" (use postgresql+psycopg://)" if url.get_backend_name() == "postgresql" else ""))
        return
    if url.get_backend_name() == "sqlite":
        yield from _sqlite(url.database)
        return
    if network:
        yield from _connect(config)


def _sqlite(database: str | None) -> Iterator[Problem]:
    if database in (None, "", ":memory:"):
        return
    path = Path(database)
    if path.exists():
        kind = _kind(path)
        if kind is not None:
            yield Problem(DB, ProblemCode.DB_PATH, f"{path} is {kind}, not a SQLite database file")
            return
        try:
            with path.open("rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            yield Problem(DB, ProblemCode.DB_PATH, f"cannot read {path}: {exc.strerror or exc}")
            return
        if head and head != b"SQLite format 3\x00":
            yield Problem(DB, ProblemCode.DB_PATH, f"{path} is not a SQLite database")
            return
        yield from _schema(f"sqlite:///{path}")
        return
    parent = path.parent
    if not parent.is_dir():
        yield Problem(DB, ProblemCode.DB_PATH, f"the directory {parent} does not exist (fleet creates {path.name}, "
                                               "not its directory)")
    elif not os.access(parent, os.W_OK | os.X_OK):
        yield Problem(DB, ProblemCode.DB_PATH, f"cannot create {path.name} in {parent}: permission denied")


def _connect(config: Config) -> Iterator[Problem]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    url = config.fleet.database_url
    try:
        engine = create_engine(url, connect_args={"connect_timeout": int(PROBE_TIMEOUT_S)})
    except (SQLAlchemyError, TypeError, ValueError) as exc:
        yield Problem(DB, ProblemCode.DB_URL, f"cannot use the URL: {_first_line(exc)}")
        return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        yield Problem(DB, ProblemCode.DB_UNREACHABLE, f"cannot open the database {_redacted(url)}: "
                                                      f"{type(cause).__name__}: {_first_line(cause)}")
        return
    finally:
        engine.dispose()
    yield from _schema(url)


def _schema(url: str) -> Iterator[Problem]:
    from sqlalchemy.exc import SQLAlchemyError

    from fleet.store.db import SchemaOutOfDate, check_schema, is_empty, make_engine

    engine = make_engine(url, read_only=True)
    try:
        if not is_empty(engine):
            check_schema(engine)
    except SchemaOutOfDate as exc:
        yield Problem(DB, ProblemCode.DB_SCHEMA, _first_line(exc))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        yield Problem(DB, ProblemCode.DB_PATH, f"cannot read {_redacted(url)}: {type(cause).__name__}: "
                                               f"{_first_line(cause)}")
    finally:
        engine.dispose()


def _redacted(url: str) -> str:
    """The URL without its password (what errors may show)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL was refused before; never echo a password
        return url.rpartition("@")[2]


# ---------------------------------------------------------------- the metrics port


def _metrics_port(config: Config) -> Iterator[Problem]:
    fleet = config.fleet
    if fleet.metrics_port == 0:
        return
    try:
        infos = socket.getaddrinfo(fleet.metrics_host, fleet.metrics_port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # ValueError: a NUL in the name
        yield Problem("fleet.metrics_host", ProblemCode.HOST_UNUSABLE,
                      f"cannot resolve {fleet.metrics_host!r}: {getattr(exc, 'strerror', None) or exc}")
        return
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # as the service's server does (wsgiref sets SO_REUSEADDR): a port in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            yield Problem("fleet.metrics_port", ProblemCode.PORT_IN_USE,
                          f"{fleet.metrics_host}:{fleet.metrics_port} is in use (another `fleet run`? set another "
                          "port, or 0 to serve no /metrics)")
        else:
            yield Problem("fleet.metrics_host", ProblemCode.HOST_UNUSABLE,
                          f"cannot listen on {fleet.metrics_host}:{fleet.metrics_port}: {exc.strerror or exc}")
    finally:
        sock.close()


# ---------------------------------------------------------------- providers


def _providers(config: Config) -> tuple[dict[str, Provider], list[Problem]]:
    """Each provider a pool uses, built as `fleet run` builds it (one at a time, so a failure
    names its own section); the simulated cloud's state file read."""
    out: dict[str, Provider] = {}
    problems: list[Problem] = []
    for name in config.providers.configured():
        only = config.model_copy(update={"pools": tuple(p for p in config.pools if p.provider == name)})
        try:
            built = build_providers(only, clock=time.time)
        except WiringError as exc:
            text = str(exc)
            path, _, rest = text.partition(": ")
            keyed = path.startswith(("providers.", "pools"))
            problems.append(Problem(path if keyed else f"providers.{name}", ProblemCode.PROVIDER,
                                    rest if keyed else text))
            continue
        except Exception as exc:  # an adapter refusing its settings (a URL, a region): never a traceback
            problems.append(Problem(f"providers.{name}", ProblemCode.PROVIDER,
                                    f"cannot be built: {type(exc).__name__}: {_first_line(exc)}"))
            continue
        out.update(built)
    sim = out.get("simulated")
    if sim is not None:
        try:
            sim.list_instances(config.fleet.name)  # local: reads its state file
        except Exception as exc:
            problems.append(Problem("providers.simulated", ProblemCode.PROVIDER, _first_line(exc)))
    return out, problems


def _endpoints(config: Config) -> Iterator[Problem]:
    do = config.providers.digitalocean
    if do is not None and any(p.provider == "digitalocean" for p in config.pools):
        token = os.environ.get(do.token_env, "").strip()
        if token:  # a missing token is named by _providers
            yield from _digitalocean(do.api_url, token)
    aws = config.providers.aws
    if aws is not None and aws.endpoint_url and any(p.provider == "aws" for p in config.pools):
        yield from _answers_http("providers.aws.endpoint_url", aws.endpoint_url)


def _digitalocean(api_url: str, token: str) -> Iterator[Problem]:
    import httpx

    where = "providers.digitalocean.api_url"
    try:
        reply = httpx.get(api_url.rstrip("/") + "/v2/account", headers={"Authorization": f"Bearer {token}"},
                          timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        yield Problem(where, ProblemCode.ENDPOINT_UNREACHABLE, f"{api_url} does not answer: {type(exc).__name__}")
        return
    if reply.status_code in (401, 403):
        yield Problem("providers.digitalocean.token_env", ProblemCode.TOKEN_REFUSED,
                      f"{api_url} refused the token (HTTP {reply.status_code})")
        return
    body = _json(reply)
    if reply.status_code != 200 or not isinstance(body, dict) or "account" not in body:
        yield Problem(where, ProblemCode.ENDPOINT_WRONG,
                      f"{api_url} does not answer as the DigitalOcean API (GET /v2/account: HTTP {reply.status_code})")


def _answers_http(where: str, url: str) -> Iterator[Problem]:
    """Any HTTP answer will do (AWS answers an unsigned GET with 4xx); no answer will not."""
    import httpx

    try:
        httpx.get(url, timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        host = urlsplit(url).netloc
        yield Problem(where, ProblemCode.ENDPOINT_UNREACHABLE, f"{host} does not answer HTTP: {type(exc).__name__}")


def _json(reply: Any) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


def _first_line(exc: BaseException | object) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
