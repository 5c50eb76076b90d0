"""One store suite, two databases: SQLite in a temp dir and the machine's PostgreSQL.

Each PostgreSQL test gets a schema of its own (search_path), so tests never see
each other's rows and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.servers import POSTGRES_URL, need_tcp


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    need_tcp("127.0.0.1", 5432, "PostgreSQL")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_url():
    with postgres_schema() as url:
        yield url
