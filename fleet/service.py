"""`fleet run`: the tick on an APScheduler interval job, `/metrics` and `/healthz`,
and a clean stop on SIGTERM/SIGINT after the tick in progress."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import make_wsgi_app

from fleet.controller import Controller

log = logging.getLogger("fleet")
_STOP_POLL_S = 0.5  # how soon a stop signal caught on another thread is acted on


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # scrapes every 15 s would flood the log
        pass


def health_app(controller: Controller, tick_seconds: float, clock: Callable[[], float] = time.time):
    metrics_app = make_wsgi_app(controller.metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            last = controller.last_success_at
            fresh = last is not None and clock() - last <= 3 * tick_seconds + 30
            body = b"ok\n" if fresh else b"no successful tick recently\n"
            start_response("200 OK" if fresh else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve_http(controller: Controller, host: str, port: int, tick_seconds: float) -> WSGIServer:
    server = make_server(host, port, health_app(controller, tick_seconds), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="fleet-http", daemon=True).start()
    return server


class Service:
    def __init__(self, controller: Controller):
        self.controller = controller
        self.stop_event = threading.Event()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.ticks = 0

    def _tick(self) -> None:
        try:
            self.controller.tick()
            self.ticks += 1
        except Exception:  # the service outlives one bad tick (database blip, provider bug)
            log.exception("tick failed")

    def run(self, install_signals: bool = True) -> None:
        cfg = self.controller.config.fleet
        server = None
        if cfg.metrics_port:
            server = serve_http(self.controller, cfg.metrics_host, cfg.metrics_port, cfg.tick_seconds)
            log.info("serving /metrics and /healthz on http://%s:%d", cfg.metrics_host, server.server_port)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        # One tick at a time; ticks missed while one ran long are coalesced into one.
        self.scheduler.add_job(self._tick, "interval", seconds=cfg.tick_seconds, max_instances=1, coalesce=True,
                               next_run_time=_utcnow(), id="tick")
        self.scheduler.start()
        try:
            # Wake now and then: Python runs signal handlers only on the main thread, and when
            # the kernel hands SIGTERM to another thread (the scheduler's, the HTTP server's)
            # an untimed wait would never return to run the handler, and the stop is lost.
            while not self.stop_event.wait(_STOP_POLL_S):
                pass
        finally:
            log.info("stopping: waiting for the tick in progress")
            self.scheduler.shutdown(wait=True)
            try:
                self.controller.release_lease()
            except Exception:  # a database gone at shutdown: the lease simply expires
                log.exception("could not release the lease")
            self.controller.close()
            if server is not None:
                server.shutdown()
            log.info("stopped after %d tick(s)", self.ticks)


def _utcnow() -> datetime:
    return datetime.now(UTC)
