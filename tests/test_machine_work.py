"""Per-machine work (`[pools.machine_work]`): the query read against a real Prometheus, the
scale-down rule in `decide`, and the controller keeping busy machines until they read idle."""

from __future__ import annotations

import contextlib
import json
import math
import time

import pytest

from fleet.config import ConfigError, MachineWorkConfig
from fleet.model import Fleet, History, Machine, MachineState, PoolView
from fleet.policy import decide
from fleet.signals.collect import SignalCollector
from fleet.signals.machine_work import build_query, machine_key
from fleet.signals.machine_work import read as read_work
from providers.simulated import private_ip
from tests.builders import UNSET, make_config, pool, queue
from tests.prometheus_harness import Exporter, PrometheusServer, sample
from tests.servers import free_port, need_binary
from tests.tick_helpers import Crash, CrashingCloud, make_rig

# ---------------------------------------------------------------- label values → machines


@pytest.mark.parametrize(("label", "match", "key"), [
    ("10.0.0.5:8000", "private_ip", "10.0.0.5"),
    ("10.0.0.5", "private_ip", "10.0.0.5"),
    ("[fd00::5]:8000", "private_ip", "fd00::5"),
    ("fd00::5", "private_ip", "fd00::5"),  # a bare IPv6 address keeps its colons
    ("ip-10-0-0-5.ec2.internal", "private_ip", "10.0.0.5"),  # DCGM's Hostname on EC2
    ("ip-10-0-0-5", "private_ip", "10.0.0.5"),
    ("ip-10-0-0-5", "name", "ip-10-0-0-5"),  # only an address match reads the EC2 scheme
    ("gen-a1b2:9400", "name", "gen-a1b2"),
    ("i-0abc", "id", "i-0abc"),
])
def test_a_label_value_names_a_machine_by_its_match(label, match, key):
    assert machine_key(label, match) == key


def test_config_errors_name_the_key_path():
    def problems(work):
        with pytest.raises(ConfigError) as err:
            make_config(pool(size="s", max=2, signals=UNSET, machine_work=work), fleet={"name": "f"})
        return str(err.value)

    assert "pools[0].machine_work: `label` is required with `query`" in problems(
        {"url": "http://p", "query": "sum by (instance) (up)"})
    assert "exactly one of `query` or `preset`" in problems({"url": "http://p"})
    assert "pools[0].machine_work.match" in problems({"url": "http://p", "preset": "vllm", "match": "mac"})
    assert "label names must match" in problems({"url": "http://p", "query": "x", "label": "bad-name"})
    cfg = MachineWorkConfig(url="http://p", preset="dcgm", selector={"gpu": "0"})
    assert cfg.machine_label == "Hostname"
    assert build_query(cfg) == 'max by (Hostname) (DCGM_FI_DEV_GPU_UTIL{gpu="0"}) / 100'


# ---------------------------------------------------------------- decide: only idle machines go


def _pool_config(**overrides):
    return make_config(pool(**dict(scale_down_cooldown_s=0, scale_down_stabilization_s=0, tolerance=0,
                                   signals=[queue(1, target_per_machine=1)]) | overrides),
                       fleet={"name": "f"})


def _ready(i: int, work: float) -> Machine:
    return Machine(id=f"m{i}", pool="p", state=MachineState.READY, size="gpu-h100x1-80gb", region="",
                   price_hourly_usd=3.0, created_at=0.0, ready_at=100.0, work_left=work)


@pytest.mark.parametrize("machine_work", [None, "per-machine work read"])
def test_a_scale_down_removes_only_machines_that_read_idle(machine_work):
    config = _pool_config()
    machines = (_ready(1, 2.0), _ready(2, 0.0), _ready(3, math.inf))  # busy, idle, unread
    view = PoolView(name="p", machines=machines, machine_work=machine_work)
    readings = {"p": (_reading(1.0),)}
    plan = decide(config, Fleet({"p": view}), readings, History(), 10_000.0).pool("p")
    (destroy,) = plan.actions
    if machine_work is None:  # blind: the least busy go, work and all
        assert set(destroy.machine_ids) == {"m2", "m1"} and plan.desired == 1
    else:
        assert destroy.machine_ids == ("m2",) and plan.desired == 2
        busy = [r.message for r in plan.reasons if r.code == "busy"]
        assert busy == ["keeping 1 busy machine(s) until they read idle: m1 (work 2)"]


def test_with_drain_busy_machines_are_drained_and_a_drain_ends_when_idle_or_late():
    config = _pool_config(machine_work={"url": "http://p", "preset": "vllm", "drain_timeout_s": 300})
    now = 10_000.0
    machines = (_ready(1, 2.0), _ready(2, 0.0), _ready(3, math.inf))
    plan = decide(config, Fleet({"p": PoolView(name="p", machines=machines, machine_work="read")}),
                  {"p": (_reading(1.0),)}, History(), now).pool("p")
    destroy, drain = sorted(plan.actions, key=lambda a: a.action)
    assert (destroy.action, destroy.machine_ids) == ("destroy", ("m2",))
    assert (drain.action, drain.machine_ids) == ("drain", ("m1",))  # the least busy of the busy
    assert plan.desired == 1  # a draining machine is no longer capacity

    def draining(i: int, work: float, since: float) -> Machine:
        return Machine(id=f"d{i}", pool="p", state=MachineState.DRAINING, size="gpu-h100x1-80gb", region="",
                       price_hourly_usd=3.0, created_at=0.0, ready_at=100.0, work_left=work, draining_since=since)

    machines = (_ready(1, 1.0), draining(1, 0.0, now - 10), draining(2, 3.0, now - 299), draining(3, 3.0, now - 300))
    plan = decide(config, Fleet({"p": PoolView(name="p", machines=machines, machine_work="read")}),
                  {"p": (_reading(1.0),)}, History(), now).pool("p")
    (destroy,) = plan.actions
    assert destroy.machine_ids == ("d1", "d3")  # idle, and past drain_timeout_s; d2 drains on
    codes = {r.code: r.message for r in plan.reasons}
    assert "d1" in codes["drained"] and "d3 (work 3)" in codes["drain_timeout"]


def test_demand_returning_takes_draining_machines_back_before_buying():
    config = _pool_config(machine_work={"url": "http://p", "preset": "vllm", "drain_timeout_s": 300})
    now = 10_000.0

    def draining(i: int, work: float) -> Machine:
        return Machine(id=f"d{i}", pool="p", state=MachineState.DRAINING, size="gpu-h100x1-80gb", region="",
                       price_hourly_usd=3.0, created_at=0.0, ready_at=100.0, work_left=work,
                       draining_since=now - 60)

    machines = (_ready(1, 1.0), draining(1, 0.0), draining(2, 3.0))
    view = PoolView(name="p", machines=machines, machine_work="read", launch_price_hourly_usd=3.0)

    def plan_for(queue: float):
        return decide(config, Fleet({"p": view}), {"p": (_reading(queue),)}, History(), now).pool("p")

    two = plan_for(2.0)  # one more machine: the busier draining one comes back, the idle one goes
    assert {a.action: a.machine_ids for a in two.actions} == {"undrain": ("d2",), "destroy": ("d1",)}
    four = plan_for(4.0)  # three more: both come back, one is bought
    acts = {a.action: a for a in four.actions}
    assert acts["undrain"].machine_ids == ("d2", "d1") and acts["create"].count == 1
    assert "destroy" not in acts


def _reading(value: float):
    from fleet.model import SignalReading

    return SignalReading(name="q", kind="queue_depth", value=value, source="static")


# ---------------------------------------------------------------- the query, against Prometheus

EXPORTED = [
    # two vLLM servers on 10.0.0.5 add up; 10.0.0.6 is idle
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.5:8000", "model_name": "m"}, 2),
    sample("vllm:num_requests_running", {"instance": "10.0.0.5:8000", "model_name": "m"}, 3),
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.5:8001", "model_name": "m"}, 0),
    sample("vllm:num_requests_running", {"instance": "10.0.0.5:8001", "model_name": "m"}, 1),
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.6:8000", "model_name": "m"}, 0),
    sample("vllm:num_requests_running", {"instance": "10.0.0.6:8000", "model_name": "m"}, 0),
    sample("vllm:num_requests_waiting", {"instance": "10.0.0.9:8000", "model_name": "other"}, 7),
    sample("vllm:num_requests_running", {"instance": "10.0.0.9:8000", "model_name": "other"}, 0),
    # dcgm-exporter on an EC2 host: the busiest GPU counts
    sample("DCGM_FI_DEV_GPU_UTIL", {"Hostname": "ip-10-0-0-8.ec2.internal", "gpu": "0"}, 30),
    sample("DCGM_FI_DEV_GPU_UTIL", {"Hostname": "ip-10-0-0-8.ec2.internal", "gpu": "1"}, 90),
    sample("fleet_test_work", {"host": "10.0.0.5:1", "shard": "0"}, "NaN"),
    sample("fleet_test_work", {"host": "10.0.0.6:1", "shard": "0"}, 4),
]


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    binary = need_binary("prometheus", "Prometheus tests (apt-get install -y prometheus)")
    with Exporter(EXPORTED) as exporter:
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), exporter.target,
                                  honor_labels=True)
        server.start()
        try:
            server.wait_for("fleet_test_work")
            yield server, exporter
        finally:
            server.stop()


@pytest.mark.prometheus
def test_the_vllm_preset_reads_each_machines_queued_and_running_requests(prom):
    server, _ = prom
    reading = read_work(MachineWorkConfig(url=server.url, preset="vllm", selector={"model_name": "m"}))
    assert reading.error is None
    assert dict(reading.work) == {"10.0.0.5": 6.0, "10.0.0.6": 0.0}


@pytest.mark.prometheus
def test_the_dcgm_preset_matches_an_ec2_hostname_to_its_address(prom):
    server, _ = prom
    by_ip = read_work(MachineWorkConfig(url=server.url, preset="dcgm"))
    assert dict(by_ip.work) == {"10.0.0.8": 0.9}
    by_name = read_work(MachineWorkConfig(url=server.url, preset="dcgm", match="name"))
    assert dict(by_name.work) == {"ip-10-0-0-8.ec2.internal": 0.9}


@pytest.mark.prometheus
def test_a_nan_sample_is_no_reading_for_its_machine_only(prom):
    server, _ = prom
    reading = read_work(MachineWorkConfig(url=server.url, query="fleet_test_work", label="host"))
    assert dict(reading.work) == {"10.0.0.6": 4.0}
    assert reading.unreadable == ("10.0.0.5",)


@pytest.mark.prometheus
@pytest.mark.parametrize(("work", "why"), [
    (dict(preset="vllm", selector={"model_name": "nope"}), "no data"),
    (dict(query="sum(vllm:num_requests_running)", label="instance"), "no series carries the label 'instance'"),
    (dict(query="vector(1)[5m]", label="instance"), "parse error"),
    (dict(query="scalar(sum(vllm:num_requests_running))", label="instance"), "one series per machine"),
])
def test_a_query_that_names_no_machine_is_missing_for_every_machine(prom, work, why):
    server, _ = prom
    reading = read_work(MachineWorkConfig(url=server.url, **work))
    assert reading.missing and why in reading.error


def test_a_server_that_is_down_is_missing():
    reading = read_work(MachineWorkConfig(url=f"http://127.0.0.1:{free_port()}", preset="vllm", timeout_s=1))
    assert reading.missing and "127.0.0.1" in reading.error


# ---------------------------------------------------------------- the controller, end to end


def _vllm(ip: str, running: int | str) -> list[str]:
    labels = {"instance": f"{ip}:8000", "model_name": "gen"}
    return [sample("vllm:num_requests_waiting", labels, 0), sample("vllm:num_requests_running", labels, running)]


class Serving:
    """The exporter the machines' vLLM servers would be: each machine's running requests."""

    def __init__(self, server: PrometheusServer, exporter: Exporter):
        self.server, self.exporter = server, exporter
        self.version = 0

    def set(self, work: dict[str, int | str], address=private_ip) -> None:
        """Serve `work` (machine id → running requests, on the machine's `address`) and wait
        until Prometheus has it."""
        self.version += 1
        self.exporter.lines = [sample("fleet_test_version", {}, self.version)]
        for machine_id, running in work.items():
            self.exporter.lines += _vllm(address(machine_id), running)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = self.server.query("fleet_test_version")["data"]["result"]
            if got and float(got[0]["value"][1]) == self.version:
                return
            time.sleep(0.1)
        raise AssertionError(f"Prometheus did not scrape version {self.version}: {self.server.log()}")


@pytest.fixture
def serving(tmp_path):
    binary = need_binary("prometheus", "Prometheus tests (apt-get install -y prometheus)")
    with Exporter([sample("fleet_test_version", {}, 0)]) as exporter:
        server = PrometheusServer(binary, tmp_path / "prometheus", exporter.target, honor_labels=True)
        (tmp_path / "prometheus").mkdir()
        server.start()
        try:
            yield Serving(server, exporter)
        finally:
            server.stop()


def _rig(tmp_path, url: str, **work):
    return make_rig(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path, scale_down_cooldown_s=0,
                    scale_down_stabilization_s=0, tolerance=0, budget=None, max_hourly_usd=None,
                    machine_work={"url": url, "preset": "vllm", "selector": {"model_name": "gen"},
                                  "timeout_s": 2, **work})


def _up(rig, ctl, queue: int) -> list[str]:
    rig.set(queue=queue)
    ctl.tick()
    rig.clock.advance(200)  # booted
    ctl.tick()
    return sorted(rig.cloud_ids(), key=int)


@pytest.mark.prometheus
def test_a_scale_down_keeps_busy_machines_until_they_read_idle(serving, tmp_path):
    rig = _rig(tmp_path, serving.server.url)
    ctl = rig.controller()
    a, b, c = _up(rig, ctl, queue=12)  # 3 machines at 4 per machine
    serving.set({a: 2, b: 0, c: 1})
    rig.set(queue=4)  # one machine's worth: two should go
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a, c}  # only the idle one went
    assert plan.desired == 2
    assert any(r.code == "busy" and a in r.message and c in r.message for r in plan.reasons)
    assert any(r.code == "machine_work" and "2 busy, 1 idle" in r.message for r in plan.reasons)
    gauge = {reading: ctl.metrics.registry.get_sample_value(
        "fleet_pool_machine_work", {"pool": "imagegen", "reading": reading}) for reading in ("busy", "idle")}
    assert gauge == {"busy": 2.0, "idle": 1.0}

    serving.set({a: 2, c: 0})  # c finished its work
    rig.clock.advance(15)
    ctl.tick()
    assert rig.cloud_ids() == {a}


@pytest.mark.prometheus
def test_a_machine_that_takes_work_after_the_plan_is_not_destroyed(serving, tmp_path):
    rig = _rig(tmp_path, serving.server.url)
    ctl = rig.controller()
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 1, b: 0})
    rig.set(queue=0)

    class WorkArrivesBeforeTheRecheck(SignalCollector):
        def read_pool_machine_work(self, pool):
            serving.set({a: 1, b: 3})  # b took requests between the plan and the destroy
            return super().read_pool_machine_work(pool)

    ctl = rig.controller(signals=WorkArrivesBeforeTheRecheck())
    rig.clock.advance(15)
    result = ctl.tick()
    (destroy,) = result.plan.pool("imagegen").actions
    assert destroy.machine_ids == (b,)  # the plan chose b ...
    assert rig.cloud_ids() == {a, b}  # ... and the re-check kept it
    assert any(n.code == "busy_at_recheck" and f"{b} (busy 3)" in n.message for n in result.notes["imagegen"])


@pytest.mark.prometheus
def test_a_machine_whose_series_reads_nan_is_kept_however_long(serving, tmp_path):
    # its server answers, so it is alive, but its work is unknown: never counted idle
    rig = _rig(tmp_path, serving.server.url, unread_idle_after_s=60)
    ctl = rig.controller()
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 0, b: "NaN"})
    rig.set(queue=0)
    for _ in range(10):  # 150 s, past unread_idle_after_s
        rig.clock.advance(15)
        plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {b}  # the idle one went
    assert any(r.code == "machine_work" and "1 unread" in r.message for r in plan.reasons)


@pytest.mark.prometheus
def test_an_unread_machine_is_kept_until_silent_for_unread_idle_after_s(serving, tmp_path):
    rig = _rig(tmp_path, serving.server.url, unread_idle_after_s=600)
    ctl = rig.controller()
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 1})  # b's server shows no series (crashed, or not scraped yet)
    rig.set(queue=0)
    for _ in range(39):  # 585 s of ticks: b is unread, so kept
        rig.clock.advance(15)
        plan = ctl.tick().plan.pool("imagegen")
        assert rig.cloud_ids() == {a, b}
    assert any(r.code == "machine_work" and "1 busy, 1 unread" in r.message for r in plan.reasons)
    rig.clock.advance(15)  # 600 s unread while the query answers for a: b serves nothing
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a}
    assert any(r.code == "machine_work" and "1 silent" in r.message for r in plan.reasons)


@pytest.mark.prometheus
def test_series_that_match_no_machine_of_the_pool_never_count_a_machine_silent(serving, tmp_path):
    # the label carries hostnames, the pool matches private addresses: nothing matches, which says
    # the config is wrong, not that every server is gone
    rig = _rig(tmp_path, serving.server.url, unread_idle_after_s=60)
    ctl = rig.controller()
    _up(rig, ctl, queue=8)
    serving.exporter.lines = _vllm("gpu-host-1", 0) + _vllm("gpu-host-2", 0)
    serving.server.wait_for('vllm:num_requests_running{instance="gpu-host-2:8000"}')
    rig.set(queue=0)
    for _ in range(10):  # 150 s, past unread_idle_after_s
        rig.clock.advance(15)
        plan = ctl.tick().plan.pool("imagegen")
    assert len(rig.cloud_ids()) == 2
    assert any(r.code == "machine_work" and "no series matches any machine of the pool by its private_ip"
               in r.message for r in plan.reasons)


def test_prometheus_down_removes_no_ready_machine(tmp_path):
    rig = _rig(tmp_path, f"http://127.0.0.1:{free_port()}", unread_idle_after_s=60)
    ctl = rig.controller()
    _up(rig, ctl, queue=8)
    rig.set(queue=0)
    for _ in range(10):  # 150 s, past unread_idle_after_s: no answer is no evidence of idle
        rig.clock.advance(15)
        plan = ctl.tick().plan.pool("imagegen")
    assert len(rig.cloud_ids()) == 2
    assert any(r.code == "machine_work" and "missing" in r.message for r in plan.reasons)


@contextlib.contextmanager
def _on_digitalocean(serving, tmp_path, queue: int, **work):
    """A DigitalOcean pool (pydo, the fake API) whose Droplets booted for `queue` requests, its
    queue read from a file; yields the fake, its clock, the controller, the signals file, the
    Droplet ids and `address` (a Droplet's private IPv4, as the API showed it)."""
    from tests.clock import FakeClock
    from tests.do_fake import FakeDigitalOcean
    from tests.test_digitalocean_e2e import TOKEN
    from tests.test_digitalocean_e2e import controller as do_controller

    clock = FakeClock()
    signals = tmp_path / "signals.json"
    signals.write_text(json.dumps({"queue": queue}))
    with FakeDigitalOcean(token=TOKEN, clock=clock, boot_seconds=120) as fake:
        ctl = do_controller(fake, clock, tmp_path, queue=None, scale_down_cooldown_s=0,
                            scale_down_stabilization_s=0, tolerance=0,
                            machine_work={"url": serving.server.url, "preset": "vllm", "timeout_s": 2,
                                          "selector": {"model_name": "gen"}, **work})
        ctl.tick()
        clock.advance(130)  # active, with addresses
        ctl.tick()
        droplets = {str(d["id"]): d for d in fake.live()}  # as the API shows them

        def address(droplet_id: str) -> str:
            (net,) = [n for n in droplets[droplet_id]["networks"]["v4"] if n["type"] == "private"]
            return net["ip_address"]

        yield fake, clock, ctl, signals, sorted(droplets, key=int), address


@pytest.mark.prometheus
def test_on_digitalocean_a_busy_droplet_is_matched_by_its_private_address_and_kept(serving, tmp_path):
    with _on_digitalocean(serving, tmp_path, queue=12) as (fake, clock, ctl, signals, ids, address):
        a, b, c = ids
        serving.set({a: 2, b: 0, c: 1}, address=address)
        signals.write_text('{"queue": 4}')
        clock.advance(15)
        plan = ctl.tick().plan.pool("sdxl")
        assert {str(d["id"]) for d in fake.live()} == {a, c}
        assert any(r.code == "busy" for r in plan.reasons)


def _drain_rig(tmp_path, url: str, **work):
    return _rig(tmp_path, url, drain_timeout_s=300, **work)


@pytest.mark.prometheus
def test_a_busy_machine_is_drained_tagged_and_destroyed_once_idle(serving, tmp_path):
    rig = _drain_rig(tmp_path, serving.server.url)
    ctl = rig.controller()
    a, b, c = _up(rig, ctl, queue=12)
    serving.set({a: 2, b: 0, c: 1})
    rig.set(queue=4)  # one machine's worth: the idle one goes, the least busy drains
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a, c}
    tagged = {m.id for m in rig.cloud.all_machines() if m.draining}
    assert tagged == {c}
    (row,) = [r for r in ctl.store.unfinished_machines() if r.provider_id == c]
    assert row.state is MachineState.DRAINING
    assert plan.desired == 1 and any(r.code == "drain" for r in plan.reasons)
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")  # the next plan sees it draining
    assert plan.draining == 1 and ctl.metrics.registry.get_sample_value(
        "fleet_pool_machines", {"pool": "imagegen", "state": "draining"}) == 1.0

    rig.clock.advance(15)  # still busy, within the drain: kept
    ctl.tick()
    assert rig.cloud_ids() == {a, c}
    serving.set({a: 2, c: 0})  # its requests finished
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a}
    assert any(r.code == "drained" and c in r.message for r in plan.reasons)


@pytest.mark.prometheus
def test_a_drain_that_outlasts_drain_timeout_s_is_cut_and_a_restart_keeps_its_clock(serving, tmp_path):
    rig = _drain_rig(tmp_path, serving.server.url)
    ctl = rig.controller()
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 2, b: 1})  # b, the less busy, drains
    rig.set(queue=4)
    rig.clock.advance(15)
    ctl.tick()
    drained_at = rig.clock.now
    assert rig.cloud_ids() == {a, b}
    ctl = rig.controller()  # a restart: the drain clock lives in the database
    while rig.clock.now - drained_at < 285:
        rig.clock.advance(15)
        ctl.tick()
        assert rig.cloud_ids() == {a, b}
    rig.clock.advance(15)  # 300 s
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a}
    assert any(r.code == "drain_timeout" and f"{b} (work 1)" in r.message for r in plan.reasons)


@pytest.mark.prometheus
def test_a_drain_tag_lost_to_a_crash_is_put_on_next_tick(serving, tmp_path):
    rig = _drain_rig(tmp_path, serving.server.url)
    tagging = CrashingCloud(rig.cloud, "mark_draining", "before", armed=False)
    ctl = rig.controller(providers={"simulated": tagging})
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 1, b: 2})
    rig.set(queue=4)
    tagging.armed = True
    rig.clock.advance(15)
    with pytest.raises(Crash):
        ctl.tick()  # died after the DRAINING row was written, before the tag
    assert not any(m.draining for m in rig.cloud.all_machines())
    rig.clock.advance(15)
    rig.controller().tick()
    assert {m.id for m in rig.cloud.all_machines() if m.draining} == {a}


@pytest.mark.prometheus
def test_a_draining_machine_is_taken_back_when_demand_returns(serving, tmp_path):
    rig = _drain_rig(tmp_path, serving.server.url)
    ctl = rig.controller()
    a, b = _up(rig, ctl, queue=8)
    serving.set({a: 2, b: 1})
    rig.set(queue=4)
    rig.clock.advance(15)
    ctl.tick()
    assert {m.id for m in rig.cloud.all_machines() if m.draining} == {b}
    rig.set(queue=8)  # demand is back before b's drain ended
    rig.clock.advance(15)
    plan = ctl.tick().plan.pool("imagegen")
    assert rig.cloud_ids() == {a, b}  # nothing bought
    assert not any(m.draining for m in rig.cloud.all_machines())
    (row,) = [r for r in ctl.store.unfinished_machines() if r.provider_id == b]
    assert row.state is MachineState.READY
    assert any(r.code == "undrain" for r in plan.reasons)


@pytest.mark.prometheus
def test_on_digitalocean_a_busy_droplet_is_drained_by_tag_and_destroyed_once_idle(serving, tmp_path):
    from tests.do_fake import OpenApiCheck

    with _on_digitalocean(serving, tmp_path, queue=8, drain_timeout_s=600) as (fake, clock, ctl, signals, ids,
                                                                              address):
        a, b = ids
        serving.set({a: 3, b: 1}, address=address)
        signals.write_text('{"queue": 4}')
        clock.advance(15)
        ctl.tick()
        tags = {str(d["id"]): d["tags"] for d in fake.live()}
        assert "fleet-draining" in tags[b] and "fleet-draining" not in tags[a]
        serving.set({a: 3, b: 0}, address=address)
        clock.advance(15)
        ctl.tick()
        assert {str(d["id"]) for d in fake.live()} == {a}
        OpenApiCheck().all(fake.requests)  # the tag calls too, against their schemas
