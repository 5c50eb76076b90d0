"""Access to the real servers the tests use, and the rule for when one is absent.

On a developer machine without a server, a test that needs it skips with the
reason.  Under CI (`CI=true`) a missing server is a failure: a green CI always
means the real servers were used.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

POSTGRES_URL = os.environ.get("FLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip (developer machine) or fail (CI) because a real server is missing."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_tcp(host: str, port: int, what: str) -> None:
    if not tcp_answers(host, port):
        unavailable(f"{what} does not answer on {host}:{port}")


def need_binary(name: str, what: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{what}: `{name}` is not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
