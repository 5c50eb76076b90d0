"""A heartbeat for the lease while the tick acts: a provider call may outlast lease_seconds
(timeouts, retries, one DELETE per Droplet), and a live replica must not lose its lease to a
standby in the middle of one.  A process that is frozen stops beating and loses it, as it should."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from fleet.store.lease import LeaseLost
from fleet.store.repo import Store
from fleet.telemetry import kv

log = logging.getLogger("fleet")


class LeaseKeeper:
    def __init__(self, store: Store, every_s: float):
        self.store = store
        self.every_s = every_s
        self.lost = False
        self._beats = 0
        self._beat = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.store.renew()
            except LeaseLost as exc:
                self.lost = True
                log.warning(kv(event="lease_lost", reason=str(exc)))
                return
            except Exception as exc:  # a database blip: the next beat (or the lease's own expiry) decides
                log.warning(kv(event="lease_renew_failed", error=type(exc).__name__))
            with self._beat:
                self._beats += 1
                self._beat.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_for_beat(self, timeout_s: float) -> bool:
        """Block until the next renewal (tests, and anyone who must know the lease was renewed)."""
        with self._beat:
            seen = self._beats
            return self._beat.wait_for(lambda: self._beats > seen, timeout_s)
