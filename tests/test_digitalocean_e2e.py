"""`fleet` end to end on a DigitalOcean pool: the controller and the CLI, the pydo adapter, the
DigitalOcean fake over HTTP, and a real SQLite database.

The CLI tests run `fleet` as a user does (a subprocess, the token in DIGITALOCEAN_TOKEN, the
adapter built by the controller's factory from `[providers.digitalocean]`).  The tick tests
share one virtual clock between the controller, the adapter's sleep and the fake.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.config import Config, parse_config
from fleet.controller import Controller
from fleet.model import ErrorKind
from fleet.store.repo import month_start
from fleet.wiring import build_controller
from providers.digitalocean import DigitalOceanProvider
from tests import builders
from tests.clock import FakeClock
from tests.do_fake import FakeDigitalOcean, Fault, OpenApiCheck

H100, L40S = "gpu-h100x1-80gb", "gpu-l40sx1-48gb"
PRICES = {H100: 3.39, L40S: 1.57}
DROPLETS = "/v2/droplets"
TOKEN = "dop_v1_e2e_secret_0123456789abcdef"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeDigitalOcean]:
    with FakeDigitalOcean(token=TOKEN, clock=clock, boot_seconds=120) as server:
        yield server
        OpenApiCheck().all(server.requests)


def config_data(fake: FakeDigitalOcean, tmp_path: Path, *, queue: float | None = 12.0,
                database_url: str | None = None, **pool: Any) -> dict:
    budget = pool.pop("budget", 40.0)
    source = queue if queue is not None else builders.file_source(tmp_path / "signals.json", "queue")
    (tmp_path / "cloud-init.yaml").write_text("#cloud-config\nruncmd:\n  - nvidia-smi\n")
    return builders.config_data(
        builders.pool("sdxl", **dict(provider="digitalocean", size=[H100, L40S], region=["tor1", "nyc2"],
                                     image="gpu-h100x1-base", ssh_keys=["3b:16:e4:bf:8b:00:8b:b8"],
                                     user_data_file=str(tmp_path / "cloud-init.yaml"), min=0, max=10,
                                     max_hourly_usd=20.0, boot_seconds=120, max_boot_seconds=900,
                                     scale_up_cooldown_s=30, scale_down_cooldown_s=120,
                                     scale_down_stabilization_s=120, signals=[builders.queue(source)]) | pool),
        fleet={"name": "e2e", "database_url": database_url or f"sqlite:///{tmp_path / 'fleet.db'}",
               "tick_seconds": 15, "metrics_port": 0},
        budget={"max_hourly_usd": budget},
        providers={"digitalocean": {"token_env": "DIGITALOCEAN_TOKEN", "api_url": fake.url, "timeout_s": 5.0,
                                    "capacity_miss_ttl_s": 300.0}})


def write_toml(path: Path, data: dict) -> None:
    path.write_text(builders.to_toml(data))


def fleet_cli(*args: str, cwd: Path, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DIGITALOCEAN_TOKEN"}
    env.update(FLEET_LOG_LEVEL="DEBUG", COLUMNS="200")
    if token is not None:
        env["DIGITALOCEAN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def live_ids(fake: FakeDigitalOcean) -> set[str]:
    return {str(d["id"]) for d in fake.live()}


# ---------------------------------------------------------------- the CLI, as a user runs it


def test_run_once_creates_gpu_droplets_and_plan_only_reads(tmp_path: Path) -> None:
    with FakeDigitalOcean(token=TOKEN) as fake:  # wall clock: the subprocess has its own
        write_toml(tmp_path / "fleet.toml", config_data(fake, tmp_path))
        run = fleet_cli("run", "--once", "--config", "fleet.toml", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        droplets = fake.live()
        assert len(droplets) == 3  # queue 12 / 4 per machine
        for d in droplets:
            assert (d["size_slug"], d["region"]["slug"], d["image"]["slug"]) == (H100, "tor1", "gpu-h100x1-base")
            assert "gpu_info" in d  # a GPU Droplet: only `type=gpus` lists it
            tags = set(d["tags"])
            assert {"fleet:e2e", "pool:sdxl"} <= tags
            assert len([t for t in tags if t.startswith("fleet-token:")]) == 1
        (post,) = fake.calls("POST", DROPLETS)
        assert post.body["user_data"] == "#cloud-config\nruncmd:\n  - nvidia-smi\n"
        assert post.body["ssh_keys"] == ["3b:16:e4:bf:8b:00:8b:b8"]

        before = len(fake.requests)
        plan = fleet_cli("plan", "--config", "fleet.toml", "--output", "json", cwd=tmp_path)
        assert plan.returncode == 0, plan.stderr
        sent = fake.requests[before:]
        assert sent and {r.method for r in sent} == {"GET"}
        (pool,) = json.loads(plan.stdout)["pools"]
        assert (pool["provider"], pool["booting"], pool["desired"], pool["actions"]) == ("digitalocean", 3, 3, [])
        assert json.loads(plan.stdout)["burn_usd_per_hour"]["now"] == pytest.approx(3 * 3.39)
        for out in (run, plan):
            assert TOKEN not in out.stdout + out.stderr  # logged at DEBUG, still never the token
        OpenApiCheck().all(fake.requests)


def test_missing_token_is_named_and_nothing_is_called(tmp_path: Path) -> None:
    with FakeDigitalOcean(token=TOKEN) as fake:
        write_toml(tmp_path / "fleet.toml", config_data(fake, tmp_path))
        for args in (("run", "--once"), ("check",)):
            result = fleet_cli(*args, "--config", "fleet.toml", cwd=tmp_path, token=None)
            assert result.returncode == 1
            assert "DIGITALOCEAN_TOKEN" in result.stderr
        assert fake.requests == []


# ---------------------------------------------------------------- ticks on a virtual clock


def controller(fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path, *, token: str = TOKEN,
               **pool: Any) -> Controller:
    cfg: Config = parse_config(config_data(fake, tmp_path, **pool))
    # The adapter as the factory builds it, plus the virtual sleep so waits advance the shared clock.
    provider = DigitalOceanProvider(token=token, api_url=fake.url, timeout_s=5.0, capacity_miss_ttl_s=300.0,
                                    clock=clock, sleep=clock.sleep)
    return build_controller(cfg, providers={"digitalocean": provider}, clock=clock)


def db_ids(ctl: Controller) -> set[str]:
    return {m.provider_id for m in ctl.store.unfinished_machines()}


def test_capacity_on_the_first_candidate_is_served_from_the_next_in_the_same_tick(
        fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path) -> None:
    fake.block(H100, "tor1")
    ctl = controller(fake, clock, tmp_path)
    result = ctl.tick()
    assert {(d["size_slug"], d["region"]["slug"]) for d in fake.live()} == {(H100, "nyc2")}
    assert len(fake.live()) == 3 and db_ids(ctl) == live_ids(fake)
    # the adapter's own note says which candidate it moved past, and why
    assert any(n.code == "launch_note" and "tor1" in n.message and "no capacity" in n.message
               for n in result.notes["sdxl"])


def test_429s_are_waited_out_and_the_tick_finishes(fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path) -> None:
    fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=2))
    fake.inject("POST", DROPLETS, Fault.rate_limited(retry_after=3))
    ctl = controller(fake, clock, tmp_path)
    ctl.tick()
    assert len(fake.live()) == 3 and db_ids(ctl) == live_ids(fake)
    assert clock.slept == [2.0, 3.0]
    assert [r.status for r in fake.calls("POST")] == [429, 202]
    assert sum(r.status == 429 for r in fake.requests) == 2 and len(fake.requests) <= 12  # no storm


def test_a_lost_create_response_is_adopted_next_tick_without_duplicates(
        fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path) -> None:
    fake.inject("POST", DROPLETS, Fault.lost())
    ctl = controller(fake, clock, tmp_path)
    first = ctl.tick()
    assert len(fake.live()) == 3 and db_ids(ctl) == set()  # made, but the client saw an error
    assert [n.code for n in first.notes["sdxl"]] == ["create_failed"]
    assert [a.error_kind for a in ctl.store.unconfirmed_creates(0.0)] == [ErrorKind.TRANSIENT]
    for _ in range(3):
        clock.advance(31)  # past the scale-up cooldown: a duplicate would be created now
        ctl.tick()
    assert len(fake.calls("POST", DROPLETS)) == 1
    assert len(fake.live()) == 3 and db_ids(ctl) == live_ids(fake)


def test_a_bad_token_blocks_the_provider_and_says_so(fake: FakeDigitalOcean, clock: FakeClock,
                                                      tmp_path: Path) -> None:
    secret = "dop_v1_revoked_0000000000000000"
    ctl = controller(fake, clock, tmp_path, token=secret)
    plan = ctl.tick().plan.pool("sdxl")
    assert plan.held and plan.actions == ()
    assert any("authentication failed" in r.message and secret not in r.message for r in plan.reasons)
    assert fake.calls("POST") == [] and fake.live() == []


def test_plan_sends_only_gets(fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path) -> None:
    ctl = controller(fake, clock, tmp_path)
    plan = ctl.tick(dry_run=True).plan.pool("sdxl")
    assert plan.desired == 3 and len(plan.actions) == 1
    assert fake.requests and {r.method for r in fake.requests} == {"GET"}
    assert fake.live() == []


def chaos(rng: random.Random, rate: float):
    """20% of requests fail: server errors, 429s, and lost answers to requests that took effect."""
    menu = [Fault.http(500), Fault.http(503), Fault.rate_limited(retry_after=1), Fault.lost(),
            Fault.lost(status=500)]

    def pick(method: str, path: str) -> Fault | None:
        return rng.choice(menu) if rng.random() < rate else None

    return pick


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_100_ticks_of_random_demand_with_20_percent_failures(
        fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path, seed: int) -> None:
    soak(fake, clock, tmp_path, seed)


def test_100_chaotic_ticks_on_postgresql(fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path,
                                         postgres_url: str) -> None:
    soak(fake, clock, tmp_path, seed=7, database_url=postgres_url)


def soak(fake: FakeDigitalOcean, clock: FakeClock, tmp_path: Path, seed: int, database_url: str | None = None) -> None:
    rng = random.Random(seed)
    global_cap, pool_cap = 30.0, 25.0  # at $3.39 a launch (the dearest candidate): 7 machines fit
    ctl = controller(fake, clock, tmp_path, queue=None, budget=global_cap, max_hourly_usd=pool_cap,
                     database_url=database_url)
    signals = tmp_path / "signals.json"
    fake.chaos = chaos(rng, 0.2)
    start = clock.now
    failed_ticks, queue = 0, 12
    for i in range(100):
        if rng.random() < 0.15:  # demand holds for a while, then jumps
            queue = rng.choice([0, 0, 4, 12, 28, 60])
        signals.write_text(json.dumps({"queue": queue}))
        if i % 20 == 10:  # capacity comes and goes on the first candidate
            fake.blocked ^= {(H100, "tor1")}
        clock.advance(rng.uniform(10, 40))
        try:
            ctl.tick()
        except Exception:  # noqa: BLE001  (a tick may die mid-way, like a crash: the next repairs it)
            failed_ticks += 1
        burn = sum(PRICES[d["size_slug"]] for d in fake.live())
        assert burn <= min(global_cap, pool_cap) + 1e-9, f"burn {burn} over the caps"
    injected = sum(1 for r in fake.requests if r.status != 200 and r.status not in (202, 204, 404))
    assert injected >= 0.1 * len(fake.requests)  # the chaos really bit

    fake.chaos = None  # calm: a few ticks reconcile whatever the last failures left
    for _ in range(3):
        clock.advance(30)
        ctl.tick()
    assert db_ids(ctl) == live_ids(fake), "the database and the cloud disagree"
    names = [d["name"] for d in fake.live()]
    assert len(names) == len(set(names)), "a create was duplicated"
    hours = (clock.now - start) / 3600
    spent = sum(float(v) for v in ctl.store.spend_since(month_start(clock.now)).values())
    # per-second billing with a 60 s minimum: each machine may cost at most its price for a minute extra
    minimums = len(fake.created) * max(PRICES.values()) / 60
    assert spent <= min(global_cap, pool_cap) * hours + minimums + 1e-6
    assert spent > 0
    destroyed = len(fake.created) - len(fake.live())
    print(f"seed={seed} requests={len(fake.requests)} injected={injected} failed_ticks={failed_ticks} "
          f"created={len(fake.created)} destroyed={destroyed} live={len(fake.live())} "
          f"spent={spent:.2f} hours={hours:.2f} slept={sum(clock.slept):.0f}s")
    assert destroyed > 0  # demand moved the fleet both ways
    assert failed_ticks == 0, "API failures must be absorbed by the tick, never crash it"
