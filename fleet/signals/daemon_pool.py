"""Worker threads for signal reads that never hold the process: daemon threads, so a read hung
in a client library (a server that drips one byte a second, a FIFO nobody writes) is abandoned
at exit instead of joined.  `concurrent.futures.ThreadPoolExecutor` joins its workers at
interpreter exit, which kept a stopped `fleet run` alive for 93 s past SIGTERM."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonPool:
    def __init__(self, max_workers: int, name: str):
        self._max = max_workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._outstanding = 0  # jobs submitted and not finished: the workers they need
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the signal pool is closed")
            self._outstanding += 1
            if self._outstanding > len(self._workers) and len(self._workers) < self._max:
                worker = threading.Thread(target=self._work, name=f"{self._name}-{len(self._workers)}",
                                          daemon=True)
                self._workers.append(worker)
                worker.start()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
            with self._lock:
                self._outstanding -= 1

    def shutdown(self) -> None:
        """Stop the idle workers; a worker inside a hung read is left to the interpreter's exit."""
        with self._lock:
            self._closed = True
            count = len(self._workers)
        for _ in range(count):
            self._jobs.put(None)
