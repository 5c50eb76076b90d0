"""`prometheus` against a real Prometheus scraping DCGM- and vLLM-format metrics served
by the test (tests/prometheus_harness.py), plus a local server for auth and shapes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fleet.config import PrometheusSource
from fleet.signals import read_source
from fleet.signals.base import Missing
from fleet.signals.prometheus import build_queries
from tests.prometheus_harness import Exporter, JsonResponder, PrometheusServer, Route, sample
from tests.servers import free_port, need_binary
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness

pytestmark = pytest.mark.prometheus
WEIRD = 'we"ird\\name'  # a label value that needs escaping in PromQL
STALE_AGE_S = 90


def exposition(now_s: float) -> list[str]:
    gpu = [("a", "0", 40, 20000, 60000), ("a", "1", 60, 40000, 40000), ("b", "0", 90, 1000, 79000),
           ("zero", "0", 0, 0, 0)]
    lines = ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    for pool, index, util, used, free in gpu:
        labels = {"gpu": index, "UUID": f"GPU-{pool}-{index}", "modelName": "NVIDIA H100 80GB HBM3",
                  "Hostname": f"{pool}-host", "pool": pool}
        lines += [sample("DCGM_FI_DEV_GPU_UTIL", labels, util), sample("DCGM_FI_DEV_FB_USED", labels, used),
                  sample("DCGM_FI_DEV_FB_FREE", labels, free)]
    vllm = [("llama", 5, 3, 0.42, 0.99), ("legacy", 1, 2, None, 0.7), (WEIRD, 4, 0, 0.1, None),
            ("half", 2, None, None, None)]
    for model, waiting, running, kv, old_kv in vllm:
        labels = {"model_name": model, "engine": "0"}
        lines.append(sample("vllm:num_requests_waiting", labels, waiting))
        if running is not None:
            lines.append(sample("vllm:num_requests_running", labels, running))
        if kv is not None:
            lines.append(sample("vllm:kv_cache_usage_perc", labels, kv))
        if old_kv is not None:
            lines.append(sample("vllm:gpu_cache_usage_perc", labels, old_kv))
    lines += [
        sample("nv_inference_pending_request_count", {"model": "resnet", "version": "1"}, 6),
        sample("nv_inference_pending_request_count", {"model": "bert", "version": "1"}, 2),
        sample("tgi_queue_size", {"pool": "tgi"}, 11),
        sample("fleet_test_nan", {"pool": "a"}, "NaN"),
        sample("fleet_test_multi", {"shard": "0"}, 1),
        sample("fleet_test_multi", {"shard": "1"}, 2),
        # an exporter that stamps its own samples, last updated 90 s ago
        sample("fleet_test_stale", {"pool": "a"}, 5, int((now_s - STALE_AGE_S) * 1000)),
    ]
    return lines


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    binary = need_binary("prometheus", "Prometheus tests (apt-get install -y prometheus)")
    with Exporter(exposition(time.time())) as exporter:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), exporter.target)
        server.start()
        try:
            server.wait_for("fleet_test_stale")  # one scrape carries every series
            yield server
        finally:
            server.stop()


def preset(prom: PrometheusServer, name: str, **selector: str) -> PrometheusSource:
    return PrometheusSource(type="prometheus", url=prom.url, preset=name, selector=selector)


def query(url: str, promql: str, **kw) -> PrometheusSource:
    return PrometheusSource(type="prometheus", url=url, query=promql, **kw)


class PrometheusHarness(Harness):
    kind = "prometheus"

    def __init__(self, prom: PrometheusServer) -> None:
        self.prom = prom

    def value(self) -> tuple[Any, float]:
        return preset(self.prom, "tgi_queue", pool="tgi"), 11.0

    def nothing(self) -> Any:
        return preset(self.prom, "dcgm_gpu_utilization", pool="nowhere")

    def down(self, port: int) -> Any:
        return query(f"http://127.0.0.1:{port}", "up")

    def malformed(self) -> Any:
        return query(self.prom.url, "fleet_test_multi")  # two series where one number is asked for

    def silent(self, port: int, timeout_s: float) -> Any:
        return query(f"http://127.0.0.1:{port}", "up", timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("PROM_TOKEN", secret)
        with_user = self.prom.url.replace("http://", f"http://u:{secret}@")
        return [query(self.prom.url, 'tgi_queue_size{pool="tgi"}', token_env="PROM_TOKEN"),
                query(f"{with_user}?key={secret}", "fleet_test_multi", token_env="PROM_TOKEN"),
                query(f"http://u:{secret}@127.0.0.1:{free_port()}", "up", token_env="PROM_TOKEN")]


@pytest.fixture
def harness(prom) -> Harness:
    return PrometheusHarness(prom)


@pytest.mark.parametrize(("name", "selector", "expected"), [
    ("dcgm_gpu_utilization", {"pool": "a"}, 0.5),  # avg(40, 60) / 100
    ("dcgm_gpu_utilization", {"pool": "b"}, 0.9),
    ("dcgm_memory_used_fraction", {"pool": "a"}, 0.375),  # 60000 / (60000 + 100000)
    ("vllm_queue", {"model_name": "llama"}, 8.0),  # waiting 5 + running 3
    ("vllm_queue", {"model_name": WEIRD}, 4.0),
    ("vllm_kv_cache", {"model_name": "llama"}, 0.42),  # the new metric wins over the deprecated one
    ("vllm_kv_cache", {"model_name": "legacy"}, 0.7),  # only the deprecated one exists
    ("triton_queue", {"model": "resnet"}, 6.0),
    ("triton_queue", {}, 8.0),
    ("tgi_queue", {"pool": "tgi"}, 11.0),
])
def test_presets_read_the_scraped_values(prom, name, selector, expected):
    reading = read_source(preset(prom, name, **selector))
    assert reading.error is None
    assert reading.value == pytest.approx(expected)
    assert reading.age_s is not None and 0 <= reading.age_s < 10  # scraped every second
    assert reading.source.startswith(f"prometheus {name}") and reading.source.endswith(f"@ {prom.url}")


def test_selector_values_are_escaped():
    cfg = PrometheusSource(type="prometheus", url="http://p:9090", preset="tgi_queue", selector={"model": WEIRD})
    assert build_queries(cfg)[0] == 'sum(tgi_queue_size{model="we\\"ird\\\\name"})'


def test_a_preset_with_a_missing_half_is_missing_not_partial(prom):
    reading = read_source(preset(prom, "vllm_queue", model_name="half"))  # no running gauge
    assert reading.value is None
    assert "no data" in reading.error


def test_zero_total_memory_is_nan_and_missing(prom):
    reading = read_source(preset(prom, "dcgm_memory_used_fraction", pool="zero"))  # 0 / (0 + 0)
    assert reading.value is None
    assert "NaN" in reading.error


def test_custom_queries(prom):
    raw = read_source(query(prom.url, 'tgi_queue_size{pool="tgi"}'))
    assert raw.value == 11.0 and raw.age_s is not None and raw.age_s < 10
    scalar = read_source(query(prom.url, "scalar(sum(fleet_test_multi))"))
    assert (scalar.value, scalar.error, scalar.age_s) == (3.0, None, None)  # a scalar has no sample age


@pytest.mark.parametrize(("promql", "reason"), [
    ("fleet_test_multi", "query returned 2 series; aggregate it, e.g. sum(...)"),
    ("fleet_test_absent_metric", "query returned no data (empty result)"),
    ("fleet_test_nan", "NaN"),
    ("sum(", "HTTP 400 bad_data"),
    ("fleet_test_multi[1m]", "query returned a matrix"),
    ('"text"', "query returned a string"),
    ("1/0", "query returned +Inf"),
])
def test_queries_that_do_not_give_one_number_are_missing(prom, promql, reason):
    reading = read_source(query(prom.url, promql))
    assert reading.value is None
    assert reason in reading.error


def test_a_sample_older_than_max_age_is_missing(prom):
    fresh_enough = read_source(query(prom.url, "fleet_test_stale", max_age_s=600))
    assert fresh_enough.value == 5.0
    assert STALE_AGE_S - 1 <= fresh_enough.age_s < STALE_AGE_S + 60  # the sample's own time, not "now"
    stale = read_source(query(prom.url, "fleet_test_stale", max_age_s=30))
    assert stale.value is None and stale.code is Missing.STALE
    assert "max_age_s=30" in stale.error


PROM_ONE = {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [1700000000.0, "7"]}]}}


def test_token_headers_and_server_timeout_are_sent_and_the_token_never_shown(monkeypatch):
    # Prometheus itself checks no bearer token, so a local server records what is sent.
    monkeypatch.setenv("PROM_TOKEN", "t0ken-abc")
    with JsonResponder({"/api/v1/query": Route(body=PROM_ONE)}) as server:
        cfg = query(server.url, "sum(x)", token_env="PROM_TOKEN", headers={"X-Scope-OrgID": "ml"},
                    max_age_s=1e12, timeout_s=2.5)
        reading = read_source(cfg)
    assert reading.value == 7.0
    first = server.requests[0]
    assert first.headers["authorization"] == "Bearer t0ken-abc"
    assert first.headers["x-scope-orgid"] == "ml"
    assert "timeout=2500ms" in first.path
    assert "t0ken-abc" not in reading.source


def test_unauthorized_and_unset_token_are_missing(monkeypatch):
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    with JsonResponder({"/api/v1/query": Route(status=401, raw=b"Unauthorized")}) as server:
        unset = read_source(query(server.url, "sum(x)", token_env="PROM_TOKEN"))
        assert unset.value is None and unset.code is Missing.AUTH and "PROM_TOKEN" in unset.error
        assert server.requests == []
        denied = read_source(query(server.url, "sum(x)"))
    assert denied.value is None and denied.code is Missing.AUTH and "HTTP 401" in denied.error


def test_config_rejects_a_selector_with_a_custom_query_and_bad_label_names():
    with pytest.raises(ValueError, match="presets only"):
        PrometheusSource(type="prometheus", url="http://p", query="up", selector={"pool": "a"})
    with pytest.raises(ValueError, match="label names"):
        PrometheusSource(type="prometheus", url="http://p", preset="tgi_queue", selector={"bad-name": "a"})


class CountingExporter(Exporter):
    """Counters that grow with time, as a serving engine's do: per second, 10 requests start
    on model `llama` (9 waited <= 0.5 s, 1 waited 2.5-5 s) and on Triton's `resnet` (1.5 s of
    queueing in all); model `idle` has counters that stand still (nothing started)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    @property
    def body(self) -> str:
        t = time.monotonic() - self.started + 1.0
        lines = ["# TYPE vllm:request_queue_time_seconds histogram"]
        for model, per_s in (("llama", t), ("idle", 1.0)):
            labels = {"model_name": model, "engine": "0"}
            for le, count in (("0.5", 9), ("1.0", 9), ("2.5", 9), ("5.0", 10), ("+Inf", 10)):
                lines.append(sample("vllm:request_queue_time_seconds_bucket", {**labels, "le": le}, count * per_s))
            lines.append(sample("vllm:request_queue_time_seconds_count", labels, 10 * per_s))
            lines.append(sample("vllm:request_queue_time_seconds_sum", labels, 6.3 * per_s))
        labels = {"model": "resnet", "version": "1"}
        lines += ["# TYPE nv_inference_queue_duration_us counter",
                  sample("nv_inference_queue_duration_us", labels, 1.5e6 * t),
                  "# TYPE nv_inference_request_success counter",
                  sample("nv_inference_request_success", labels, 10 * t)]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom_counting(tmp_path_factory):
    binary = need_binary("prometheus", "Prometheus tests (apt-get install -y prometheus)")
    with CountingExporter() as exporter:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus-rates"), exporter.target)
        server.start()
        try:
            server.wait_for("rate(nv_inference_request_success[1m]) > 0")  # two scrapes: rates exist
            yield server
        finally:
            server.stop()


@pytest.mark.parametrize(("name", "selector", "expected"), [
    # 99th percentile: rank 9.9 of 10 falls in the (2.5, 5] bucket, interpolated: 2.5 + 2.5 x 0.9
    ("vllm_queue_wait", {"model_name": "llama"}, 4.75),
    ("triton_queue_wait", {"model": "resnet"}, 0.15),  # 1.5 s of queueing / 10 requests, per second
])
def test_queue_wait_presets_read_rates_of_the_scraped_counters(prom_counting, name, selector, expected):
    reading = read_source(preset(prom_counting, name, **selector))
    assert reading.error is None
    assert reading.value == pytest.approx(expected, rel=1e-3)
    assert reading.age_s is not None and 0 <= reading.age_s < 10


def test_queue_wait_with_nothing_started_is_missing_not_zero(prom_counting):
    reading = read_source(preset(prom_counting, "vllm_queue_wait", model_name="idle"))
    assert reading.value is None and "NaN" in reading.error


def test_rate_window_s_sets_the_window_the_queue_wait_presets_read(prom_counting):
    # with Prometheus' default 1 m scrape interval a [1m] window holds one sample and rate() is
    # empty: the reading would always be missing; rate_window_s widens it
    cfg = PrometheusSource(type="prometheus", url=prom_counting.url, preset="triton_queue_wait",
                           selector={"model": "resnet"}, rate_window_s=5)
    assert "[5s]" in build_queries(cfg)[0]
    assert read_source(cfg).value == pytest.approx(0.15, rel=1e-3)


def test_rate_window_applies_to_the_queue_wait_presets_only():
    with pytest.raises(ValueError, match="rate_window_s` applies to the vllm_queue_wait"):
        PrometheusSource(type="prometheus", url="http://p", preset="vllm_queue", rate_window_s=120)
    cfg = PrometheusSource(type="prometheus", url="http://p", preset="vllm_queue_wait", rate_window_s=120)
    assert "[120s]" in build_queries(cfg)[0]
    default = PrometheusSource(type="prometheus", url="http://p", preset="vllm_queue_wait")
    assert "[60s]" in build_queries(default)[0]
