"""Trace loaders: recorded traffic → arrival times and GPU seconds per request.

A `Trace` is two sorted numpy arrays: `arrival_s` (seconds from trace start) and
`service_s` (seconds one request holds one slot of one machine).  Formats:

- `csv`: the generic `arrival_s,service_s` CSV (a header naming both columns);
- `azure`: Azure LLM inference trace 2023 (`TIMESTAMP,ContextTokens,GeneratedTokens`);
- `mooncake`: Mooncake JSONL (`timestamp` in ms, `input_length`, `output_length`);
- `openb`: Alibaba GPU 2023 openb pod list (`creation_time`, `deletion_time`, `num_gpu`,
  `gpu_milli`): a pod with k >= 1 GPUs is k requests holding a GPU for its lifetime;
  a fractional pod (one GPU, `gpu_milli` < 1000) holds lifetime × milli/1000 GPU seconds.

LLM traces record tokens, not time: `service_s = t0_s + input/prefill_tps + output/decode_tps`
(the pool's `simulation` settings), and `Trace.model` says so wherever results are shown.
Every problem raises `TraceError` naming the file and line.

A trace is checked for plausible units and sizes as it is read, so memory and time grow with
the trace and never with a value in it: times past `MAX_TIME_S` (seconds since an epoch would
be past the year 5000: milliseconds or microseconds), a span or a service time past `MAX_SPAN_S`,
a pod with more than `MAX_GPUS_PER_POD` GPUs, more than `MAX_REQUESTS` requests (read, or after
`--scale`), a field or line past the CSV field limit.  How many ticks a replay may take is the
scenario's check (fleet/sim/run.py), with the line that makes it run long.
"""

from __future__ import annotations

import csv
import json
import math
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fleet.config import SimulationSettings

FORMATS = ("auto", "csv", "azure", "mooncake", "openb")

DAY = 86400.0
MAX_TIME_S = 1e11  # seconds since an epoch: the year 5138; a bigger time is in another unit
MAX_SPAN_S = 3 * 366 * DAY  # from the first arrival to the last, and one service time
MAX_GPUS_PER_POD = 128  # the biggest machines hold 8 or 16
MAX_REQUESTS = 10_000_000  # about 200 MB replayed; a bigger trace is cut first
MAX_LINE = 1024 * 1024  # characters on one JSONL line


class TraceError(Exception):
    """A trace that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    arrival_s: np.ndarray  # float64, sorted, starts near 0
    service_s: np.ndarray  # float64, > 0
    name: str
    format: str
    model: str = ""  # how service times were derived ("" when the trace records them)
    lines: np.ndarray | None = None  # int64: the file's line of each request (None: not from a file)

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    def mean_busy_slots(self) -> float:
        """Mean slots in service over the span (arrival of the first to last finish)."""
        end = float(np.max(self.arrival_s + self.service_s))
        span = max(end - float(self.arrival_s[0]), 1e-9)
        return float(self.service_s.sum()) / span


def from_arrays(arrival_s: np.ndarray | list[float], service_s: np.ndarray | list[float],
                name: str = "<arrays>") -> Trace:
    arrival = np.asarray(arrival_s, dtype=np.float64)
    service = np.asarray(service_s, dtype=np.float64)
    if len(arrival) != len(service) or len(arrival) == 0:
        raise TraceError(f"{name}: arrivals and services must be non-empty and of equal length")
    return Trace(arrival, service, name, "arrays")


def token_model(sim: SimulationSettings) -> str:
    return (f"service_s = {sim.t0_s:g} + input/{sim.prefill_tps:g} + output/{sim.decode_tps:g} "
            f"(t0_s, prefill_tps, decode_tps)")


# ---------------------------------------------------------------- detection


def detect_format(path: Path) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "mooncake"
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            header = fh.readline(MAX_LINE)
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from exc
    if header.lstrip().startswith("{"):
        return "mooncake"
    cols = {c.strip().lower() for c in header.split(",")}
    if {"timestamp", "contexttokens", "generatedtokens"} <= cols:
        return "azure"
    if {"creation_time", "deletion_time", "num_gpu"} <= cols:
        return "openb"
    if {"arrival_s", "service_s"} <= cols:
        return "csv"
    raise TraceError(f"{path}: line 1: unknown trace format (header {header.strip()[:80]!r}); expected "
                     "`arrival_s,service_s`, an Azure LLM 2023 CSV, a Mooncake JSONL or an openb pod list")


def load_trace(path: str | Path, fmt: str = "auto", sim: SimulationSettings | None = None) -> Trace:
    path = Path(path)
    sim = sim or SimulationSettings()
    if fmt not in FORMATS:
        raise TraceError(f"{path}: unknown trace format {fmt!r} (one of {', '.join(FORMATS)})")
    _regular_file(path)
    if fmt == "auto":
        fmt = detect_format(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if fmt == "mooncake":
                rows = _mooncake_rows(fh, path, sim)
            else:
                rows = _csv_rows(fh, path, fmt, sim)
            collected = _collect(rows, path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text: {exc}") from exc
    model = token_model(sim) if fmt in ("azure", "mooncake") else (
        "service_s = lifetime x GPUs (fractional pods: x gpu_milli/1000)" if fmt == "openb" else "")
    arrival, service, lines = collected
    if fmt == "openb":  # multi-GPU pods add rows at the same arrival: keep the order stable
        order = np.argsort(arrival, kind="stable")
        arrival, service, lines = arrival[order], service[order], lines[order]
    return Trace(arrival - arrival[0], service, path.name, fmt, model, lines)


Row = tuple[int, float, float]  # (line number, arrival, service)


def _regular_file(path: Path) -> None:
    """A FIFO would block the replay, a device (/dev/zero) never end; a trace is read twice
    (its format, then its rows), so it must be a file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO or pipe" if stat.S_ISFIFO(mode) else "not a file"
        raise TraceError(f"{path}: cannot read the trace: {what} (give a regular file; a trace is read twice)")


def _collect(rows: Iterator[Row], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrivals = array("d")  # 8 bytes a request, where a list of floats takes 32
    services = array("d")
    lines = array("q")
    last = -math.inf
    first: float | None = None
    for line, arrival, service in rows:
        if not (math.isfinite(arrival) and math.isfinite(service)):
            raise TraceError(f"{path}: line {line}: not a finite number")
        if arrival < 0:
            raise TraceError(f"{path}: line {line}: negative arrival time {arrival:g}")
        if service <= 0:
            raise TraceError(f"{path}: line {line}: service time must be > 0, got {service:g}")
        if arrival < last:
            raise TraceError(f"{path}: line {line}: arrivals are not sorted ({arrival:g} after {last:g})")
        first = arrival if first is None else first
        _plausible(path, line, arrival, arrival - first, service)
        if len(arrivals) >= MAX_REQUESTS:
            raise TraceError(f"{path}: line {line}: more than {MAX_REQUESTS:,} requests; replay a part of the "
                             "trace (or a sample of it: --scale below 1 thins it after reading)")
        last = arrival
        arrivals.append(arrival)
        services.append(service)
        lines.append(line)
    if not arrivals:
        raise TraceError(f"{path}: the trace has no requests")
    return (np.frombuffer(arrivals, dtype=np.float64).copy(), np.frombuffer(services, dtype=np.float64).copy(),
            np.frombuffer(lines, dtype=np.int64).copy())


def _plausible(path: Path, line: int, arrival: float, since_first: float, service: float) -> None:
    """Times in seconds, of a size a replay can cover (see the module's docstring)."""
    if arrival > MAX_TIME_S:
        raise TraceError(f"{path}: line {line}: arrival {arrival:g} s is past the year 5000 as seconds since "
                         "an epoch: the times are in another unit (milliseconds?); give seconds")
    if since_first > MAX_SPAN_S:
        raise TraceError(f"{path}: line {line}: arrival {_human(since_first)} after the first: more than "
                         f"{_human(MAX_SPAN_S)} (times in another unit? give seconds)")
    if service > MAX_SPAN_S:
        raise TraceError(f"{path}: line {line}: service time {_human(service)}: more than {_human(MAX_SPAN_S)} "
                         "(in another unit? give seconds)")


def _human(seconds: float) -> str:
    if seconds >= 366 * DAY:
        return f"{seconds:g} s ({seconds / (365.25 * DAY):.1f} years)"
    return f"{seconds:g} s ({seconds / DAY:.1f} days)" if seconds >= DAY else f"{seconds:g} s"


def _number(value: str | None, column: str, line: int, path: Path) -> float:
    if value is None or value.strip() == "":
        raise TraceError(f"{path}: line {line}: column {column!r} is empty")
    try:
        return float(value)
    except ValueError:
        raise TraceError(f"{path}: line {line}: column {column!r} is not a number: {value!r}") from None


_COLUMNS = {
    "csv": ("arrival_s", "service_s"),
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "openb": ("creation_time", "deletion_time", "num_gpu", "gpu_milli"),
}


def _csv_rows(fh: TextIO, path: Path, fmt: str, sim: SimulationSettings) -> Iterator[Row]:
    reader = csv.reader(fh)
    cols = _columns(reader, path, fmt)
    records = _records(reader, path, max(cols) + 1)
    if fmt == "csv":
        for line, row in records:
            yield line, _number(row[cols[0]], "arrival_s", line, path), _number(row[cols[1]], "service_s",
                                                                                 line, path)
    elif fmt == "azure":
        yield from _azure_rows(records, cols, path, sim)
    else:
        yield from _openb_rows(records, cols, path)


def _columns(reader: Iterator[list[str]], path: Path, fmt: str) -> list[int]:
    """The index of each of the format's columns, from the header."""
    header = _next_row(reader, path)
    if header is None:
        raise TraceError(f"{path}: line 1: the trace is empty (no header)")
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in _COLUMNS[fmt] if c not in index]
    if missing:
        raise TraceError(f"{path}: line 1: missing column(s) {', '.join(missing)} "
                         f"(header: {','.join(header)[:120]})")
    return [index[c] for c in _COLUMNS[fmt]]


def _records(reader: Any, path: Path, width: int) -> Iterator[tuple[int, list[str]]]:
    """(line, row) of each non-blank row, at least `width` columns wide."""
    while (row := _next_row(reader, path)) is not None:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < width:
            raise TraceError(f"{path}: line {line}: expected at least {width} columns, got {len(row)}")
        yield line, row


def _next_row(reader: Any, path: Path) -> list[str] | None:
    """The next row, or None at the end; the CSV module's own errors (a field past its 128 KiB
    limit, a NUL byte) name the line."""
    try:
        return next(reader, None)
    except csv.Error as exc:
        raise TraceError(f"{path}: line {reader.line_num}: not a CSV trace: {exc}") from None


def _azure_rows(records: Iterator[tuple[int, list[str]]], cols: list[int], path: Path,
                sim: SimulationSettings) -> Iterator[Row]:
    t_first: datetime | None = None
    for line, row in records:
        stamp = _timestamp(row[cols[0]], line, path)
        t_first = t_first or stamp
        inp = _number(row[cols[1]], "ContextTokens", line, path)
        out = _number(row[cols[2]], "GeneratedTokens", line, path)
        yield line, (stamp - t_first).total_seconds(), sim.t0_s + inp / sim.prefill_tps + out / sim.decode_tps


def _openb_rows(records: Iterator[tuple[int, list[str]]], cols: list[int], path: Path) -> Iterator[Row]:
    for line, row in records:
        created = _number(row[cols[0]], "creation_time", line, path)
        deleted = _number(row[cols[1]], "deletion_time", line, path)
        gpu_count = _number(row[cols[2]], "num_gpu", line, path)
        milli = _number(row[cols[3]], "gpu_milli", line, path)
        if not (math.isfinite(gpu_count) and gpu_count <= MAX_GPUS_PER_POD):
            raise TraceError(f"{path}: line {line}: num_gpu {gpu_count:g}: a pod holds at most "
                             f"{MAX_GPUS_PER_POD} GPUs")
        gpus = int(gpu_count)
        if gpus <= 0:
            continue  # a CPU-only pod: no GPU demand
        if deleted <= created:
            continue  # a pod that never held its GPU
        lifetime = deleted - created
        if gpus == 1 and 0 < milli < 1000:
            lifetime *= milli / 1000.0
        for _ in range(gpus):
            yield line, created, lifetime


def _timestamp(text: str, line: int, path: Path) -> datetime:
    text = text.strip()
    try:
        # Azure writes 7 fractional digits; Python reads at most 6.
        head, dot, frac = text.partition(".")
        return datetime.fromisoformat(head + (dot + frac[:6] if dot else ""))
    except ValueError:
        raise TraceError(f"{path}: line {line}: TIMESTAMP is not a date-time: {text!r}") from None


def _mooncake_rows(fh: TextIO, path: Path, sim: SimulationSettings) -> Iterator[Row]:
    line = 0
    while text := fh.readline(MAX_LINE + 1):
        line += 1
        if len(text) > MAX_LINE:
            raise TraceError(f"{path}: line {line}: longer than {MAX_LINE:,} characters: not a Mooncake record")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise TraceError(f"{path}: line {line}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{path}: line {line}: expected a JSON object")
        values = []
        for key in ("timestamp", "input_length", "output_length"):
            if key not in obj:
                raise TraceError(f"{path}: line {line}: missing key {key!r}")
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TraceError(f"{path}: line {line}: {key!r} is not a number: {value!r}")
            values.append(float(value))
        stamp_ms, inp, out = values
        yield line, stamp_ms / 1000.0, sim.t0_s + inp / sim.prefill_tps + out / sim.decode_tps


# ---------------------------------------------------------------- scaling


def scale_trace(trace: Trace, k: float, seed: int = 0, jitter_s: float = 60.0) -> Trace:
    """Each arrival `k` times (k may be fractional: the last copy with probability frac(k);
    k < 1 thins the trace), extra copies shifted by a seeded uniform jitter in [0, jitter_s).

    The jitter stands for a bigger population's users arriving independently: copies within
    milliseconds of each other would multiply every burst k-fold, which more users do not do;
    a minute keeps the trace's minute-scale shape (its peaks and empty minutes)."""
    if not (k > 0 and math.isfinite(k)):
        raise TraceError(f"--scale must be a positive number, got {k}")
    if k == 1:
        return trace
    n = len(trace)
    if n * k > MAX_REQUESTS:
        raise TraceError(f"--scale {k:g} makes about {n * k:,.0f} requests of {n:,}: at most {MAX_REQUESTS:,}"
                         if n * k < 1e15 else f"--scale {k:g} makes about {n * k:.3g} requests of {n:,}: at most "
                                              f"{MAX_REQUESTS:,}")
    rng = np.random.default_rng(seed)
    whole, frac = int(math.floor(k)), k - math.floor(k)
    copies = np.full(n, whole, dtype=np.int64) + (rng.random(n) < frac)
    index = np.repeat(np.arange(n), copies)
    if len(index) == 0:
        raise TraceError(f"--scale {k} leaves no request of {n}")
    # the first copy of each arrival keeps its time; further copies are jittered
    first = np.ones(len(index), dtype=bool)
    first[1:] = index[1:] != index[:-1]
    shift = np.where(first, 0.0, rng.random(len(index)) * jitter_s)
    arrival = trace.arrival_s[index] + shift
    order = np.argsort(arrival, kind="stable")
    arrival = arrival[order]
    lines = trace.lines[index][order] if trace.lines is not None else None
    return Trace(arrival - arrival[0], trace.service_s[index][order], f"{trace.name} x{k:g}", trace.format,
                 trace.model, lines)
