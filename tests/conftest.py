"""Shared fixtures: moto's server over real HTTP, dummy AWS credentials."""

from __future__ import annotations

import os

import pytest

from tests.db_fixtures import database_url, postgres_url  # noqa: F401  (fixtures: SQLite and PostgreSQL)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A moto server on 127.0.0.1 (boto3 talks HTTP to it), shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, moto_endpoint) -> str:
    """Dummy credentials and a region, so nothing can reach a real account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    return moto_endpoint


def pytest_configure(config) -> None:
    os.environ.setdefault("FLEET_LOG_LEVEL", "WARNING")
