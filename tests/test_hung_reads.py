"""Signal reads that cannot hold the process (issue 21, item 8): a server that drips one byte a
second and a FIFO nobody writes leave `fleet plan` and a stopped `fleet run` free to exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import pool, queue, write_config
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dripping() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers a byte every half second (a client read timeout of
    a second never fires), for about a minute."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b" " * 100:
                if stop.wait(0.5):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/metrics"
    stop.set()
    server.close()


def _config(tmp_path: Path, source: dict, port: int = 0) -> Path:
    return write_config(tmp_path / "fleet.toml", pool(max=4, signals=[queue(source)]),
                        fleet={"name": "hung", "database_url": f"sqlite:///{tmp_path / 'fleet.db'}",
                               "tick_seconds": 15, "metrics_port": port})


def _dripping(url: str) -> dict:
    return {"type": "http_json", "url": url, "path": "q", "timeout_s": 1}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_LOG_LEVEL": "warning"}


def test_plan_exits_while_a_source_drips(tmp_path, dripping):
    cfg = _config(tmp_path, _dripping(dripping))
    result = subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--config", str(cfg), "-o", "json"],
                            env=_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert '"value": null' in result.stdout  # the reading is missing, not waited for


def test_a_fifo_as_a_signal_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "signals.fifo"
    os.mkfifo(fifo)
    cfg = _config(tmp_path, {"type": "file", "path": str(fifo), "key": "q"})
    result = subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--config", str(cfg)],
                            env=_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 1  # refused before the first tick, naming the key
    assert "pools[0].signals[0].source.path" in result.stderr and "[file_kind]" in result.stderr
    # and one made a FIFO after the start is a missing reading, not a read that never returns
    code = ("import sys; from fleet.config import FileSource; from fleet.signals.file import read; "
            f"r = read(FileSource(type='file', path={str(fifo)!r}, key='q')); "
            "sys.exit(0 if r.value is None and 'not a regular file' in r.error else 1)")
    assert subprocess.run([sys.executable, "-c", code], env=_env(), timeout=20).returncode == 0


def test_run_stops_within_seconds_of_sigterm_while_a_source_drips(tmp_path, dripping):
    cfg = _config(tmp_path, _dripping(dripping),
                  port=free_port())
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "run", "--config", str(cfg)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = tmp_path / "fleet.db"
        for _ in range(200):  # until the first tick has written its decision
            if deadline.exists() and _decided(deadline):
                break
            threading.Event().wait(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)  # exits within the grace systemd and Kubernetes give
    finally:
        proc.kill()
    assert proc.returncode == 0


def _decided(db: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from decisions").fetchone()[0] > 0
    except sqlite3.Error:
        return False
