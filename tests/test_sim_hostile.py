"""`fleet simulate` on hostile traces (issue 21, item 11): each is refused with one line naming
the file and line, quickly and in little memory, or written where it says; never a hang, a
runaway or a traceback."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli import app
from fleet.config import load_config
from fleet.sim.run import ScenarioError, pick_pool, scenario
from fleet.sim.trace import TraceError, load_trace, scale_trace

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "fleet" / "sim" / "data" / "simulate.toml"


class Hang(BaseException):
    """Ran past its bound (a BaseException: the CLI's guard must not swallow it)."""


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Every test here ends within 30 s, or fails (on main several of these cases hang)."""
    def hang(*_: Any) -> None:
        raise Hang("ran past 30 s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def simulate(*args: str) -> Any:
    return CliRunner().invoke(app, ["simulate", "--config", str(CONFIG), *args])


def small_trace(tmp_path: Path, n: int = 200) -> Path:
    rows = "".join(f"{i * 0.5},{1 + i % 3}\n" for i in range(n))
    return write(tmp_path, "small.csv", "arrival_s,service_s\n" + rows)


@pytest.mark.parametrize(("name", "text", "line", "what"), [
    ("service-1e9", "arrival_s,service_s\n0,1\n1,1e9\n", 3, "service time 1e+09 s"),
    ("span-1e9", "arrival_s,service_s\n0,1\n1e9,1\n", 3, "after the first"),
    # epoch milliseconds in a column of seconds: the year 55,000
    ("epoch-ms", "arrival_s,service_s\n1700000000000,1\n1700000000500,1\n", 2, "another unit"),
    ("openb-num-gpu-1e9", "creation_time,deletion_time,num_gpu,gpu_milli\n0,100,1e9,1000\n", 2, "num_gpu"),
    ("openb-num-gpu-nan", "creation_time,deletion_time,num_gpu,gpu_milli\n0,100,nan,1000\n", 2, "num_gpu"),
    ("openb-in-ms", "creation_time,deletion_time,num_gpu,gpu_milli\n0,1000,1,1000\n"
                    "12900000000,12900001000,1,1000\n", 3, "after the first"),
    ("ten-megabyte-field", "arrival_s,service_s\n0," + "1" * 10_000_000 + "\n", 2, "not a CSV trace"),
    ("ten-megabyte-header", "arrival_s,service_s," + "x" * 10_000_000 + "\n0,1\n", 1, "not a CSV trace"),
])
def test_implausible_traces_name_the_line(tmp_path: Path, name: str, text: str, line: int, what: str) -> None:
    path = write(tmp_path, "t.csv", text)
    started = time.monotonic()
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert f"t.csv: line {line}: " in str(err.value) and what in str(err.value), str(err.value)
    assert time.monotonic() - started < 5  # num_gpu = 1e9 once expanded to 1e9 rows


def test_mooncake_in_microseconds_and_a_huge_line(tmp_path: Path) -> None:
    stamps = [{"timestamp": 1.7e15 + i, "input_length": 10, "output_length": 10} for i in range(2)]
    path = write(tmp_path, "t.jsonl", "\n".join(json.dumps(s) for s in stamps) + "\n")
    with pytest.raises(TraceError, match=r"line 1: .*another unit"):
        load_trace(path)
    huge = write(tmp_path, "h.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1, "x": "'
                 + "y" * 2_000_000 + '"}\n')
    with pytest.raises(TraceError, match="line 1: longer than"):
        load_trace(huge)


def test_a_replay_that_would_tick_for_a_year_names_the_line(tmp_path: Path) -> None:
    # 3e7 s is a plausible job (openb's pods run for months), but not for 2 requests at 15 s ticks
    path = write(tmp_path, "t.csv", "arrival_s,service_s\n0,1\n1,3e7\n")
    cfg = load_config(CONFIG)
    pool = pick_pool(cfg, None)
    with pytest.raises(ScenarioError, match=r"t.csv: line 3: the replay would run 2,000,000 ticks"):
        scenario(cfg, pool, load_trace(path, sim=pool.simulation))
    result = simulate("--trace", str(path))
    assert result.exit_code == 1 and "line 3: the replay would run" in result.stderr, result.output


def test_scale_past_the_request_limit_is_refused_before_any_allocation(tmp_path: Path) -> None:
    trace = load_trace(small_trace(tmp_path))
    with pytest.raises(TraceError, match="at most 10,000,000"):
        scale_trace(trace, 100_000)
    result = simulate("--trace", str(small_trace(tmp_path)), "--scale", "100000")
    assert result.exit_code == 1 and "--scale 100000 makes about 20,000,000 requests" in result.stderr, result.output
    huge = simulate("--trace", str(small_trace(tmp_path)), "--scale", "1e300")
    assert huge.exit_code == 1 and "Traceback" not in huge.output and "requests of 200" in huge.stderr


def test_scale_keeps_the_line_of_each_copy(tmp_path: Path) -> None:
    trace = scale_trace(load_trace(small_trace(tmp_path, 3)), 2)
    assert trace.lines is not None and sorted(trace.lines.tolist()) == [2, 2, 3, 3, 4, 4]


def test_plot_into_a_directory_writes_inside_it_and_says_where(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    out.mkdir()
    result = simulate("--trace", str(small_trace(tmp_path)), "--policy", "fleet", "--plot", str(out))
    assert result.exit_code == 0, result.output
    written = out / "small.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {written}" in result.stdout
    assert not (tmp_path / "plots.png").exists()


def test_plot_without_a_suffix_says_the_file_it_wrote(tmp_path: Path) -> None:
    result = simulate("--trace", str(small_trace(tmp_path)), "--policy", "fleet", "--plot", str(tmp_path / "pic"))
    assert result.exit_code == 0, result.output
    assert f"plot written to {tmp_path / 'pic.png'}" in result.stdout and (tmp_path / "pic.png").is_file()


def test_plot_into_a_missing_top_directory_creates_nothing(tmp_path: Path) -> None:
    target = Path("/fleet-test-no-such-dir") / "x.png"
    started = time.monotonic()
    result = simulate("--trace", str(small_trace(tmp_path)), "--plot", str(target))
    assert result.exit_code == 1 and "the directory /fleet-test-no-such-dir does not exist" in result.stderr
    assert not target.parent.exists()
    deep = simulate("--trace", str(small_trace(tmp_path)), "--plot", str(tmp_path / "a" / "b" / "x.png"))
    assert deep.exit_code == 1 and not (tmp_path / "a").exists()
    bad = simulate("--trace", str(small_trace(tmp_path)), "--plot", str(tmp_path / "x.jpg"))
    assert bad.exit_code == 1 and "suffix" in bad.stderr
    assert time.monotonic() - started < 15  # refused before the replay


def test_a_negative_seed_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    result = simulate("--trace", str(small_trace(tmp_path)), "--scale", "2", "--seed", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output and "--seed" in result.output


def _limit_memory() -> None:
    limit = 1536 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize(("name", "text", "expect"), [
    ("service.csv", "arrival_s,service_s\n0,1\n1,1e9\n", "service.csv: line 3: service time"),
    ("pods.csv", "creation_time,deletion_time,num_gpu,gpu_milli\n0,100,1000000000,1000\n", "pods.csv: line 2: num_gpu"),
])
def test_real_process_refuses_within_a_time_and_memory_bound(tmp_path: Path, name: str, text: str,
                                                               expect: str) -> None:
    path = write(tmp_path, name, text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-m", "fleet.cli", "simulate", "--config", str(CONFIG), "--trace",
                             str(path)], env=env, text=True, capture_output=True, timeout=25,
                            preexec_fn=_limit_memory)
    assert result.returncode == 1 and expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_trace_that_is_not_a_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    # a FIFO blocked the replay for ever, /dev/zero read without end
    path = tmp_path / "t.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_trace(path)
    result = simulate("--trace", str(path))
    assert result.exit_code == 1 and "cannot read the trace" in result.stderr, result.output
