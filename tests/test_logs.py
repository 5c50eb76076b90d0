"""Logs that keep secrets: third-party clients quiet, URLs' credentials and query strings and
Authorization headers scrubbed from every line, even at debug."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet.logs import scrub
from tests.builders import pool, queue, write_config
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
CANARIES = ("CANARYPASS", "CANARYKEY", "CANARYTOKEN")


def test_scrub_removes_userinfo_query_strings_and_bearer_tokens():
    line = ("GET http://user:CANARYPASS@10.0.0.1:9090/api/v1/query?query=up&api_key=CANARYKEY 200 "
            "headers={'Authorization': 'Bearer CANARYTOKEN'}")
    scrubbed = scrub(line)
    assert not any(c in scrubbed for c in CANARIES)
    assert "http://***@10.0.0.1:9090/api/v1/query?***" in scrubbed


@pytest.fixture
def answering() -> Iterator[int]:
    """A JSON endpoint on 127.0.0.1 that answers every GET with {"q": 8}."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = b'{"q": 8}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def _plan(tmp_path: Path, level: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    url = f"http://user:CANARYPASS@127.0.0.1:{port or free_port()}/metrics?api_key=CANARYKEY"
    source = {"type": "http_json", "url": url, "path": "q", "timeout_s": 1,
              "headers": {"X-Api-Key": "CANARYTOKEN"}}
    cfg = write_config(tmp_path / "fleet.toml", pool(signals=[queue(source)]),
                       fleet={"database_url": f"sqlite:///{tmp_path / 'fleet.db'}", "metrics_port": 0})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_LOG_LEVEL": level}
    return subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--config", str(cfg), "-o", "json"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_no_secret_reaches_a_log_line_or_the_plan_at_debug(tmp_path, answering):
    result = _plan(tmp_path, "debug", answering)
    assert result.returncode == 0, result.stderr
    assert "HTTP Request: GET http://***@127.0.0.1" in result.stderr  # the client's own line, scrubbed
    assert '"value": 8.0' in result.stdout
    assert not any(c in result.stderr or c in result.stdout for c in CANARIES)


def test_third_party_clients_are_quiet_at_info(tmp_path, answering):
    result = _plan(tmp_path, "info", answering)
    assert result.returncode == 0, result.stderr
    assert "HTTP Request" not in result.stderr


def test_an_unknown_log_level_is_one_line(tmp_path):
    result = _plan(tmp_path, "loud")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "FLEET_LOG_LEVEL" in result.stderr
