"""Reading a pool's signals: combination of two sources, and the per-source deadline."""

from __future__ import annotations

import socket
import threading
import time

from fleet.signals import read_source
from fleet.signals.collect import SignalCollector
from tests.builders import make_config, pool, queue


def read_all(pools, reader: SignalCollector | None = None):
    """One read of `pools`' signals, by `reader` or by a reader of its own (closed after)."""
    if reader is not None:
        return reader.read_everything(pools).signals
    with SignalCollector() as own:
        return own.read_everything(pools).signals


def _pool(signals):
    return make_config(pool("p", max=3, signals=signals)).pools[0]


def test_waiting_plus_in_flight_from_two_sources():
    pool = _pool([{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 7},
                   "in_flight_source": {"type": "static", "value": 5}}])
    (reading,) = read_all([pool])["p"]
    assert reading.value == 12


def test_a_source_that_never_answers_becomes_missing_within_its_deadline():
    # A server that accepts and never says a word: the http_json source's own timeout bounds it,
    # and the collector's deadline bounds everything else.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    pool = _pool([
        {"kind": "queue_depth", "target_per_machine": 4,
         "source": {"type": "http_json", "url": f"http://127.0.0.1:{port}/q", "path": "n", "timeout_s": 0.5}},
        {"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 3}},
    ])
    started = time.monotonic()
    slow, fast = read_all([pool])["p"]
    assert time.monotonic() - started < 0.5 + 1.0 + 0.5
    assert slow.value is None and slow.error
    assert fast.value == 3
    listener.close()


def test_collector_deadline_bounds_a_source_that_cannot_bound_itself():
    release = threading.Event()

    def stuck_for_static(cfg):
        if cfg.type == "static" and cfg.value == 99:
            release.wait(10)  # a client library blocked inside a call it cannot time out
        return read_source(cfg)

    pool = _pool([{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 99}},
                  {"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 3}}])
    reader = SignalCollector(stuck_for_static, default_timeout_s=0.2, grace_s=0.1)
    try:
        stuck, fine = read_all([pool], reader)["p"]
    finally:
        release.set()
        reader.close()
    assert stuck.value is None and "no answer within 0.3s" in stuck.error
    assert fine.value == 3


def test_a_negative_or_percent_scale_reading_is_missing_not_a_number(tmp_path):
    # an in-house endpoint's -1 for "unknown" would vote 0 machines; a 0-100 utilization read as a
    # share votes ready x 85 / target: both are missing, with the reason
    path = tmp_path / "signals.json"
    path.write_text('{"queue": -1, "util": 85, "mem": 0.97}')
    pool = _pool([
        {"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "file", "path": str(path), "key": "queue"}},
        {"kind": "gpu_utilization", "target": 0.7, "source": {"type": "file", "path": str(path), "key": "util"}},
        {"kind": "memory_pressure", "target": 0.9, "source": {"type": "file", "path": str(path), "key": "mem"}},
    ])
    queue, util, mem = read_all([pool])["p"]
    assert queue.missing and "negative value -1" in queue.error
    assert util.missing and "above 1" in util.error and "/ 100" in util.error
    assert mem.value == 0.97


def test_a_hung_source_holds_one_thread_and_starves_no_other_signal():
    # A broker that accepts the login and never answers again: each tick used to queue one more
    # read behind the stuck one until the shared threads ran out and every signal read as missing.
    release = threading.Event()
    calls = []

    def hung(cfg):
        if cfg.type == "static" and cfg.value == 99:
            calls.append(cfg)
            release.wait(30)
        return read_source(cfg)

    stuck_pool = _pool([{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 99}}])
    healthy = make_config(*(pool(f"ok{i}", max=3, signals=[queue(i)]) for i in range(40))).pools
    reader = SignalCollector(hung, default_timeout_s=0.05, grace_s=0.05)
    try:
        for tick in range(50):  # more ticks than the executor has threads
            readings = read_all([stuck_pool, *healthy], reader)
            (stuck,) = readings["p"]
            assert stuck.missing
            assert [r.value for p in healthy for r in readings[p.name]] == list(range(40)), f"tick {tick}"
        assert len(calls) == 1  # one read hangs; it is not started again while it does
        assert "has not returned" in stuck.error
    finally:
        release.set()
        reader.close()


def test_a_file_not_rewritten_within_max_age_is_missing(tmp_path):
    import os

    path = tmp_path / "signals.json"
    path.write_text('{"queue": 7}')
    source = {"type": "file", "path": str(path), "key": "queue"}
    pool = _pool([{"kind": "queue_depth", "target_per_machine": 4, "source": {**source, "max_age_s": 60}},
                  {"kind": "queue_depth", "target_per_machine": 4, "source": source}])
    fresh, _ = read_all([pool])["p"]
    assert fresh.value == 7
    written = path.stat().st_mtime - 61  # the writer last wrote it 61 s ago
    os.utime(path, (written, written))
    stale, any_age = read_all([pool])["p"]
    assert stale.missing and "was last written 6" in stale.error and "(max_age_s=60)" in stale.error
    assert any_age.value == 7 and any_age.age_s >= 61


def test_closing_the_reader_does_not_wait_for_a_hung_read():
    release = threading.Event()

    def hung(cfg):
        release.wait(30)
        return read_source(cfg)

    pool = _pool([{"kind": "queue_depth", "target_per_machine": 4, "source": {"type": "static", "value": 1}}])
    try:
        with SignalCollector(hung, default_timeout_s=0.05, grace_s=0.05) as reader:
            (stuck,) = read_all([pool], reader)["p"]
            started = time.monotonic()
        assert time.monotonic() - started < 0.5  # the thread is abandoned, not joined
        assert stuck.missing
    finally:
        release.set()


def test_per_machine_work_is_read_by_the_injected_reader():
    from fleet.signals.machine_work import MachineWorkReading

    seen = []

    def work(cfg):
        seen.append(cfg)
        return MachineWorkReading({"10.0.0.5": 2.0}, "fake")

    machine_work = {"url": "http://127.0.0.1:1", "preset": "vllm"}
    with_work = make_config(pool("w", max=3, machine_work=machine_work)).pools[0]
    with SignalCollector(read_work=work) as reader:
        readings = reader.read_everything([with_work, _pool([])])
        assert dict(readings.machine_work["w"].work or {}) == {"10.0.0.5": 2.0}
        assert "p" not in readings.machine_work and readings.signals["p"] == ()
        assert reader.read_pool_machine_work(with_work) == MachineWorkReading({"10.0.0.5": 2.0}, "fake")
        assert reader.read_pool_machine_work(_pool([])) is None
    assert len(seen) == 2
