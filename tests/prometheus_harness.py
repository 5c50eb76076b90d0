"""Local servers for the signal-source tests.

- `Exporter`: a text-exposition endpoint the test fills (DCGM / vLLM format).
- `PrometheusServer`: the real `prometheus` binary on a free loopback port, scraping
  the exporter every second, with its data in a temporary directory.
- `JsonResponder`: a small HTTP server answering fixed JSON per path and recording
  the requests (for in-house JSON services and shapes a local server cannot produce).
- `silent_port()`: a socket that accepts connections and never answers (timeouts).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        # a short poll interval: shutdown() waits for one poll
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


def escape_label(value: str) -> str:
    """Text exposition escaping of a label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, labels: dict[str, str], value: float | str, timestamp_ms: int | None = None) -> str:
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
    line = f"{name}{{{inner}}} {value}"
    return line if timestamp_ms is None else f"{line} {timestamp_ms}"


class _ExporterHandler(_Quiet):
    def do_GET(self) -> None:
        body = self.server.owner.body.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Exporter(_Server):
    """Serves `lines` (text exposition) at any path; the test sets them before scraping."""

    def __init__(self, lines: list[str] | None = None):
        super().__init__(_ExporterHandler)
        self.lines = list(lines or [])

    @property
    def body(self) -> str:
        return "\n".join(self.lines) + "\n"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fleet-test
    metrics_path: /metrics
    honor_labels: {honor_labels}
    static_configs:
      - targets: ["{target}"]
"""


class PrometheusServer:
    """The real Prometheus, started on a free loopback port; `stop()` always reaps it."""

    def __init__(self, binary: str, workdir: Path, target: str, honor_labels: bool = False):
        """`honor_labels`: an exporter's own `instance` label is kept (per-machine series from one
        test exporter), instead of Prometheus setting it to the scraped target."""
        self.honor_labels = honor_labels
        self.binary = binary
        self.workdir = workdir
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    def start(self, ready_timeout_s: float = 30.0) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(CONFIG.format(target=self.target, honor_labels=str(self.honor_labels).lower()))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {ready_timeout_s}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def query(self, promql: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        return response.json()

    def wait_for(self, promql: str, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Poll until `promql` returns a non-empty vector (the exporter has been scraped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.query(promql)
            result = body.get("data", {}).get("result")
            if body.get("status") == "success" and result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{promql!r} still empty after {timeout_s}s: {self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@dataclass
class Route:
    status: int = 200
    body: Any = None  # JSON-encoded unless `raw` is given
    raw: bytes | None = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]


class _ResponderHandler(_Quiet):
    def do_GET(self) -> None:
        owner: JsonResponder = self.server.owner  # type: ignore[attr-defined]
        path = self.path
        owner.requests.append(Recorded(path=path, headers={k.lower(): v for k, v in self.headers.items()}))
        route = owner.routes.get(path.split("?", 1)[0], Route(404, {"error": "Object Not Found"}))
        body = route.raw if route.raw is not None else json.dumps(route.body).encode()
        self.send_response(route.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # an AWS JSON-protocol call (SQS) posts to the endpoint's root
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()


class JsonResponder(_Server):
    """Answers `routes[path]` (exact path, raw URL-encoded form) to a GET or a POST, and
    records every request."""

    def __init__(self, routes: dict[str, Route] | None = None):
        super().__init__(_ResponderHandler)
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Recorded] = []


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A listening socket that never accepts: TCP connects (the kernel's backlog), no byte comes back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
