"""Wiring: build what a tick needs from a config (the store, the providers, the signal reader,
the metrics), and migrate the database only where a command asks for it.

`fleet run` and `fleet db upgrade` migrate; `fleet plan` never writes: on a database that does
not exist yet or has no tables it plans against an empty in-memory stand-in.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from fleet.clock import monotonic_for
from fleet.cloud import build_providers
from fleet.config import Config
from fleet.controller import Controller
from fleet.metrics import Metrics
from fleet.observe import SignalReader
from fleet.signals.collect import SignalCollector
from fleet.store.db import check_schema, ensure_schema, is_empty, make_engine, upgrade
from fleet.store.repo import Store
from fleet.telemetry import kv
from providers.base import Provider

log = logging.getLogger("fleet")


def _sqlite_file(url: str) -> Path | None:
    """The file of a file-backed SQLite URL, else None."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def empty_store() -> Store:
    """A store over an empty in-memory database: what a dry run plans against before any tick ran."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    upgrade(engine)
    return Store(engine)


def open_store(config: Config, *, migrate: bool) -> Store:
    """The fleet's store.  With `migrate`, an empty database is upgraded to the schema (and one
    at another revision refused); without, nothing is written: a database that does not exist
    or has no tables is read as empty."""
    url = config.fleet.database_url
    if migrate:
        store = Store(make_engine(url))
        ensure_schema(store.engine)
        return store
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        return empty_store()
    engine = make_engine(url, read_only=True)
    if is_empty(engine):
        engine.dispose()
        return empty_store()
    check_schema(engine)
    return Store(engine)


# Two containers may share a hostname and both run as PID 1: the holder id carries a random
# part drawn once per process.
_PROCESS = uuid.uuid4().hex[:12]


def default_holder() -> str:
    """One holder per process: two processes (two containers with one hostname and PID 1, or a
    service and a `fleet run --once` on one host) must not both act.  A clean stop gives the
    lease back (`release_lease`), so a restart acts at once; after a crash it waits for the
    lease to expire."""
    return os.environ.get("FLEET_REPLICA_ID") or f"{socket.gethostname()}:{os.getpid()}:{_PROCESS}"


def build_controller(config: Config, *, migrate: bool = True, providers: Mapping[str, Provider] | None = None,
                     clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                     store: Store | None = None, holder: str | None = None,
                     signals: SignalReader | None = None,
                     monotonic: Callable[[], float] | None = None,
                     renew_every_s: float | None = None) -> Controller:
    """A controller for `config`; each part may be given (tests, the simulator), else built."""
    built = dict(providers) if providers is not None else build_providers(config, clock)
    log.debug(kv(event="wired", providers=",".join(built) or "none", migrate=migrate))
    own_monotonic, boot = monotonic_for(clock)
    return Controller(config, store if store is not None else open_store(config, migrate=migrate), built,
                      signals if signals is not None else SignalCollector(), metrics or Metrics(), clock=clock,
                      holder=holder or default_holder(), monotonic=monotonic or own_monotonic,
                      renew_every_s=renew_every_s, boot=boot)
