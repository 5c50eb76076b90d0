"""`fleet run`'s loop (fleet/service.py): a stop signal stops it, whichever thread catches it."""

from __future__ import annotations

import signal
import threading
import time

from fleet.service import Service
from tests.tick_helpers import make_rig


def test_a_stop_signal_caught_by_another_thread_still_stops_the_service(tmp_path) -> None:
    # The kernel may run a process-directed SIGTERM's handler on any thread (the scheduler's,
    # the HTTP server's); Python then runs the Python handler on the main thread only when that
    # thread wakes.  Deliver it to a helper thread, as the kernel may, and the service must stop.
    rig = make_rig(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path)
    service = Service(rig.controller())
    rescued = threading.Event()
    returned = threading.Event()
    original = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def deliver() -> None:
        deadline = time.monotonic() + 10
        while service.ticks < 1 and time.monotonic() < deadline:  # handlers are in place by the first tick
            time.sleep(0.01)
        assert service.ticks >= 1
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # caught on this thread, not the main one
        if not returned.wait(10):  # the bug: run() would wait forever; end it and fail below
            rescued.set()
            service.stop_event.set()

    helper = threading.Thread(target=deliver)
    helper.start()
    try:
        service.run()  # the main thread, as under `fleet run`
        returned.set()
    finally:
        helper.join()
        for sig, handler in original.items():
            signal.signal(sig, handler)
    assert not rescued.is_set(), "SIGTERM caught on another thread did not stop the service"
    assert service.stop_event.is_set()
    assert not service.scheduler.running
    # a clean stop gives the lease back: another process acts at once, not a lease later
    assert service.controller.store.try_lease("controller", "next-process", 60.0, rig.clock.now)
