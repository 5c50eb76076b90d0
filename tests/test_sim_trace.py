"""Trace loaders: every format, the shipped trace, scaling, and bad traces naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fleet.config import SimulationSettings
from fleet.sim.trace import TraceError, detect_format, load_trace, scale_trace

SHIPPED = Path(__file__).resolve().parents[1] / "fleet" / "sim" / "data" / "azure_llm2023_code.csv"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_generic_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "arrival_s,service_s\n0,2.5\n1.5,1\n1.5,3\n")
    trace = load_trace(path)
    assert trace.format == "csv"
    assert trace.arrival_s.tolist() == [0.0, 1.5, 1.5]
    assert trace.service_s.tolist() == [2.5, 1.0, 3.0]
    assert trace.model == ""


def test_columns_in_any_order_and_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id,service_s,arrival_s\na,4,10\nb,5,12\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 2.0]  # times start at the first arrival
    assert trace.service_s.tolist() == [4.0, 5.0]


def test_shipped_azure_trace_uses_the_throughput_model() -> None:
    sim = SimulationSettings(t0_s=0.1, prefill_tps=1000.0, decode_tps=10.0)
    trace = load_trace(SHIPPED, sim=sim)
    assert trace.format == "azure" and len(trace) == 8819
    # first row: 2023-11-16 18:17:03.9799600, 4808 context tokens, 10 generated
    assert trace.arrival_s[0] == 0.0
    assert trace.service_s[0] == pytest.approx(0.1 + 4808 / 1000 + 10 / 10)
    # second row 52 ms later
    assert trace.arrival_s[1] == pytest.approx(0.052)
    assert "1000" in trace.model and "10" in trace.model
    assert 3000 < trace.span_s < 3500


def test_mooncake_jsonl(tmp_path: Path) -> None:
    rows = [{"timestamp": 0, "input_length": 8000, "output_length": 60, "hash_ids": [1]},
            {"timestamp": 2500, "input_length": 0, "output_length": 120, "hash_ids": []}]
    path = write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    trace = load_trace(path)
    assert trace.format == "mooncake"
    assert trace.arrival_s.tolist() == [0.0, 2.5]
    assert trace.service_s.tolist() == pytest.approx([0.05 + 1 + 1, 0.05 + 2])


def test_openb_pods(tmp_path: Path) -> None:
    text = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
            "scheduled_time\n"
            "a,1,1,1,1000,,LS,Running,100,200,100\n"
            "b,1,1,0,0,,LS,Running,110,500,110\n"      # CPU only: no GPU demand
            "c,1,1,2,1000,,LS,Running,120,160,120\n"   # two GPUs: two requests
            "d,1,1,1,500,,LS,Running,130,230,130\n")   # half a GPU: half the GPU seconds
    trace = load_trace(write(tmp_path, "pods.csv", text))
    assert trace.format == "openb"
    assert trace.arrival_s.tolist() == [0.0, 20.0, 20.0, 30.0]
    assert trace.service_s.tolist() == [100.0, 40.0, 40.0, 50.0]


@pytest.mark.parametrize(("text", "line", "what"), [
    ("arrival_s,service_s\n0,1\n5,1\n3,1\n", 4, "not sorted"),
    ("arrival_s,service_s\n0,1\n-2,1\n", 3, "negative"),
    ("arrival_s,service_s\n0,1\n1,0\n", 3, "service time must be > 0"),
    ("arrival_s,service_s\n0,1\n1,abc\n", 3, "not a number"),
    ("arrival_s,service_s\n0,1\n1,\n", 3, "is empty"),
    ("arrival_s,service_s\n0,1\n2\n", 3, "expected at least 2 columns"),
    ("arrival_s,duration\n0,1\n", 1, "unknown trace format"),
    ("arrival_s,service_s\n", None, "no requests"),
    ("", 1, "unknown trace format"),
    ("arrival_s,service_s\n0,1\n1,inf\n", 3, "not a finite number"),
])
def test_bad_csv_names_the_line(tmp_path: Path, text: str, line: int | None, what: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert what in str(err.value)
    assert str(path) in str(err.value)
    if line is not None:
        assert f"line {line}:" in str(err.value)


def test_missing_column_when_format_is_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,5\n")
    with pytest.raises(TraceError, match=r"line 1: missing column\(s\) GeneratedTokens"):
        load_trace(path, "azure")


def test_bad_azure_timestamp_and_bad_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,1,1\n"
                                    "yesterday,1,1\n")
    with pytest.raises(TraceError, match="line 3: TIMESTAMP is not a date-time"):
        load_trace(path)
    path = write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
                                      '{"timestamp": 5, "input_length": "x", "output_length": 1}\n')
    with pytest.raises(TraceError, match="line 2: 'input_length' is not a number"):
        load_trace(path)
    path = write(tmp_path, "n.jsonl", '{"timestamp": 0, "output_length": 1}\n')
    with pytest.raises(TraceError, match="line 1: missing key 'input_length'"):
        load_trace(path)
    path = write(tmp_path, "o.jsonl", "{not json\n")
    with pytest.raises(TraceError, match="line 1: not JSON"):
        load_trace(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "nope.csv")


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path, "x.jsonl", "{}\n")) == "mooncake"
    assert detect_format(SHIPPED) == "azure"


def test_scale_replicates_with_seeded_jitter(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "t.csv", "arrival_s,service_s\n0,1\n100,2\n200,3\n"))
    big = scale_trace(trace, 3, seed=7, jitter_s=10.0)
    assert len(big) == 9
    assert np.all(np.diff(big.arrival_s) >= 0)
    assert sorted(big.service_s.tolist()) == [1.0] * 3 + [2.0] * 3 + [3.0] * 3
    assert big.arrival_s.max() < 210.0  # jitter stays within 10 s of the original arrival
    again = scale_trace(trace, 3, seed=7, jitter_s=10.0)
    assert np.array_equal(big.arrival_s, again.arrival_s)
    other = scale_trace(trace, 3, seed=8, jitter_s=10.0)
    assert not np.array_equal(big.arrival_s, other.arrival_s)


def test_fractional_scale_and_thinning() -> None:
    trace = load_trace(SHIPPED)
    half = scale_trace(trace, 0.5, seed=1)
    assert 0.45 * len(trace) < len(half) < 0.55 * len(trace)
    more = scale_trace(trace, 2.5, seed=1)
    assert 2.4 * len(trace) < len(more) < 2.6 * len(trace)
    with pytest.raises(TraceError, match="positive"):
        scale_trace(trace, 0)
