"""Per-machine work (`[pools.machine_work]`) under the signal-source contract, against a real
Prometheus.  Its reading is work per machine, not one number: the contract sees its total.
The scale-down rules that use it are in tests/test_machine_work.py."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.config import MachineWorkConfig
from fleet.signals.machine_work import read as read_work
from tests.prometheus_harness import Exporter, PrometheusServer, sample
from tests.servers import free_port, need_binary
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness, Seen

pytestmark = pytest.mark.prometheus
EXPORTED = [
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.5:8000", "model_name": "m"}, 2),
    sample("vllm:num_requests_running", {"instance": "10.0.0.5:8000", "model_name": "m"}, 3),
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.6:8000", "model_name": "m"}, 0),
    sample("vllm:num_requests_running", {"instance": "10.0.0.6:8000", "model_name": "m"}, 1),
]


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    binary = need_binary("prometheus", "Prometheus tests (apt-get install -y prometheus)")
    with Exporter(EXPORTED) as exporter:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), exporter.target,
                                  honor_labels=True)
        server.start()
        try:
            server.wait_for("vllm:num_requests_running")
            yield server
        finally:
            server.stop()


class MachineWorkHarness(Harness):
    kind = "prometheus per-machine"

    def __init__(self, prom: PrometheusServer) -> None:
        self.url = prom.url

    def value(self) -> tuple[Any, float]:
        return MachineWorkConfig(url=self.url, preset="vllm", selector={"model_name": "m"}), 6.0

    def nothing(self) -> Any:
        return MachineWorkConfig(url=self.url, preset="vllm", selector={"model_name": "nowhere"})

    def down(self, port: int) -> Any:
        return MachineWorkConfig(url=f"http://127.0.0.1:{port}", preset="vllm")

    def malformed(self) -> Any:  # one number for the whole pool: no machine is named
        return MachineWorkConfig(url=self.url, query="sum(vllm:num_requests_running)", label="instance")

    def silent(self, port: int, timeout_s: float) -> Any:
        return MachineWorkConfig(url=f"http://127.0.0.1:{port}", preset="vllm", timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("PROM_TOKEN", secret)
        return [MachineWorkConfig(url=self.url.replace("http://", f"http://u:{secret}@"), preset="vllm",
                                  token_env="PROM_TOKEN"),
                MachineWorkConfig(url=f"http://u:{secret}@127.0.0.1:{free_port()}?k={secret}", preset="vllm",
                                  token_env="PROM_TOKEN")]

    def read(self, cfg: Any) -> Seen:
        reading = read_work(cfg)
        total = None if reading.work is None else float(sum(reading.work.values()))
        return Seen(total, reading.source, reading.error, reading.code)


@pytest.fixture
def harness(prom) -> Harness:
    return MachineWorkHarness(prom)


def test_each_machine_has_its_own_work(prom):
    reading = read_work(MachineWorkConfig(url=prom.url, preset="vllm", selector={"model_name": "m"}))
    assert dict(reading.work or {}) == {"10.0.0.5": 5.0, "10.0.0.6": 1.0}
    assert reading.code is None and not reading.missing
