"""The DigitalOcean adapter (pydo) against the stateful DigitalOcean fake over real HTTP.

Every test's traffic is checked against the OpenAPI subset when the `fake` fixture closes:
every request the adapter sent (query and body) and every answer the fake gave.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from providers.base import (
    AuthError,
    CapacityError,
    ErrorKind,
    InstanceStatus,
    InvalidRequest,
    LaunchSpec,
    PoolTarget,
    Provider,
    QuotaExceeded,
    RateLimited,
    TransientError,
)
from providers.digitalocean import COUNT_REUSE_S, RATE_LIMIT_WAITS, READ_ATTEMPTS, DigitalOceanProvider
from tests.clock import FakeClock
from tests.do_fake import FakeDigitalOcean, Fault, OpenApiCheck
from tests.provider_contract import *  # noqa: F403
from tests.servers import free_port

H100, L40S = "gpu-h100x1-80gb", "gpu-l40sx1-48gb"
DROPLETS = "/v2/droplets"


@dataclass
class DOHarness:
    provider: DigitalOceanProvider
    fake: FakeDigitalOcean
    clock: FakeClock
    fleet: str = "contract"

    def target(self, pool: str = "p1", **options: object) -> PoolTarget:
        opts = {"image": "gpu-h100x1-base", "ssh_keys": ("3b:16:e4:bf:8b:00:8b:b8",),
                "user_data": "#cloud-config\nruncmd:\n  - nvidia-smi\n", "vpc_uuid": None,
                "boot_seconds": 90.0, **options}
        return PoolTarget(fleet=self.fleet, pool=pool, sizes=(H100, L40S), regions=("tor1", "nyc2"),
                          options=opts)

    def settle(self) -> None:
        self.clock.advance(self.fake.boot_seconds + 1)

    def block_first_candidate(self, target: PoolTarget) -> None:
        self.fake.block(target.sizes[0], target.regions[0])

    def block_all_candidates(self, target: PoolTarget) -> None:
        for size in target.sizes:
            for region in target.regions:
                self.fake.block(size, region)

    def unblock_all(self) -> None:
        self.fake.blocked.clear()

    def plant_foreign(self) -> str:
        return str(self.fake.add_droplet("foreign-1", H100, "tor1", ["fleet:someone-else", "pool:p1"]))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeDigitalOcean]:
    with FakeDigitalOcean(clock=clock, boot_seconds=120) as server:
        yield server
        OpenApiCheck().all(server.requests)  # the adapter's requests and the fake's answers


def make(fake: FakeDigitalOcean, clock: FakeClock, **kw: object) -> DigitalOceanProvider:
    args: dict = {"token": fake.token, "api_url": fake.url, "clock": clock, "sleep": clock.sleep,
                  "timeout_s": 5.0, **kw}
    return DigitalOceanProvider(**args)


@pytest.fixture
def harness(fake: FakeDigitalOcean, clock: FakeClock) -> DOHarness:
    return DOHarness(provider=make(fake, clock), fake=fake, clock=clock)


def spec(h: DOHarness, count: int, token: str = "tok-a", **options: object) -> LaunchSpec:
    return LaunchSpec(target=h.target(**options), count=count, token=token)


# ---------------------------------------------------------------- shape and mapping


def test_is_a_provider(harness: DOHarness) -> None:
    assert isinstance(harness.provider, Provider)
    assert harness.provider.name == "digitalocean"
    assert harness.provider.billing.min_seconds == 60


def test_create_sends_size_region_image_tags_and_names(harness: DOHarness) -> None:
    result = harness.provider.create(spec(harness, 2, vpc_uuid="5a4981aa-9653-4bd1-bef5-d6bff52042e4"))
    (post,) = harness.fake.calls("POST", DROPLETS)
    assert post.body == {
        "names": ["tok-a-0", "tok-a-1"], "size": H100, "region": "tor1", "image": "gpu-h100x1-base",
        "tags": ["fleet:contract", "pool:p1", "fleet-token:tok-a"],
        "ssh_keys": ["3b:16:e4:bf:8b:00:8b:b8"], "user_data": "#cloud-config\nruncmd:\n  - nvidia-smi\n",
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
    }
    first = result.instances[0]
    assert (first.name, first.size, first.region, first.pool, first.token) == ("tok-a-0", H100, "tor1", "p1", "tok-a")
    assert first.status is InstanceStatus.BOOTING and first.price_hourly_usd == 3.39
    assert first.created_at is not None and first.created_at.timestamp() == int(harness.clock.now)
    assert first.tags == {"fleet": "contract", "pool": "p1", "fleet-token": "tok-a"}


def test_status_mapping(harness: DOHarness) -> None:
    tags = ["fleet:contract", "pool:p1"]
    ids = {status: str(harness.fake.add_droplet(f"s-{status}", H100, "tor1", tags, status=status))
           for status in ("off", "archive", "active")}
    booting = str(harness.fake.add_droplet("s-new", H100, "tor1", tags))
    listed = {i.id: i.status for i in harness.provider.list_instances("contract")}
    assert listed == {ids["off"]: InstanceStatus.STOPPED, ids["archive"]: InstanceStatus.STOPPED,
                      ids["active"]: InstanceStatus.READY, booting: InstanceStatus.BOOTING}


# ---------------------------------------------------------------- listing


def test_listing_follows_every_page(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.max_per_page = 4
    provider = make(fake, clock)
    target = PoolTarget(fleet="f", pool="p", sizes=(H100,), regions=("tor1",), options={"image": "gpu-h100x1-base"})
    made = provider.create(LaunchSpec(target=target, count=9, token="pg"))
    fake.add_droplet("other-1", H100, "tor1", ["fleet:g"])  # another fleet's, on the last page
    listed = provider.list_instances("f")
    assert sorted(i.id for i in listed) == sorted(i.id for i in made.instances)
    pages = [r.param("page") for r in fake.calls("GET", DROPLETS) if r.param("type") == "gpus"]
    assert pages == ["1", "2", "3"]  # 10 GPU droplets, 4 per page
    assert {r.param("per_page") for r in fake.calls("GET", DROPLETS)} == {"200"}


def test_a_droplet_gone_between_two_pages_hides_no_other(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.max_per_page = 3  # stands in for 200 a page on an account with more than 200 GPU Droplets
    ids = [fake.add_droplet(f"w-{i}", H100, "tor1", ["fleet:f", "pool:p"]) for i in range(7)]
    gets = []

    def destroy_after_the_first_page(method: str, path: str) -> None:
        if method == "GET" and path == DROPLETS:
            gets.append(path)
            if len(gets) == 2:  # a destroy asked for last tick completes between pages 1 and 2
                del fake.droplets[ids[0]]

    fake.chaos = destroy_after_the_first_page
    listed = {int(i.id) for i in make(fake, clock).list_instances("f")}
    assert listed == set(ids[1:])  # the pages shifted by one: read again, nothing skipped
    totals = [r.response["meta"]["total"] for r in fake.calls("GET", DROPLETS) if r.param("type") == "gpus"]
    assert totals == [7, 6, 6, 6]  # page 2 said 6, not 7: read again (2 pages for the 6 left)


def test_a_listing_that_never_holds_still_is_an_error(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.max_per_page = 2
    for i in range(5):
        fake.add_droplet(f"w-{i}", H100, "tor1", ["fleet:f"])

    def launch_one_a_page(method: str, path: str) -> None:  # another team's busy autoscaler
        if method == "GET" and path == DROPLETS:
            fake.add_droplet(f"other-{len(fake.droplets)}", H100, "tor1", ["fleet:g"])

    fake.chaos = launch_one_a_page
    with pytest.raises(TransientError, match="changed while it was read, 3 times"):
        make(fake, clock).list_instances("f")


def test_gpu_droplets_come_from_type_gpus_and_cpu_ones_from_the_tag(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    gpu = fake.add_droplet("g-1", H100, "tor1", ["fleet:f", "pool:p"])
    cpu = fake.add_droplet("c-1", "s-1vcpu-1gb", "nyc1", ["fleet:f", "pool:cpu"], image="ubuntu-24-04-x64")
    fake.add_droplet("c-2", "s-1vcpu-1gb", "nyc1", ["fleet:other"], image="ubuntu-24-04-x64")
    listed = {i.id: i.pool for i in make(fake, clock).list_instances("f")}
    assert listed == {str(gpu): "p", str(cpu): "cpu"}
    for r in fake.calls("GET", DROPLETS):  # never the combination the API refuses
        assert not (r.param("tag_name") and r.param("type"))
    assert any(r.param("type") == "gpus" for r in fake.calls("GET", DROPLETS))


def test_a_failed_listing_raises_instead_of_reading_empty(harness: DOHarness) -> None:
    harness.provider.create(spec(harness, 1))
    harness.fake.inject("GET", DROPLETS, Fault.http(500), times=READ_ATTEMPTS)
    with pytest.raises(TransientError, match="listing droplets tagged fleet:contract"):
        harness.provider.list_instances("contract")
    assert len(harness.fake.calls("GET", DROPLETS)) == READ_ATTEMPTS


def test_a_failing_second_page_fails_the_whole_listing(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.max_per_page = 1
    provider = make(fake, clock)
    for i in range(2):
        fake.add_droplet(f"x-{i}", H100, "tor1", ["fleet:f"])
    fake.inject("GET", DROPLETS, Fault.http(503), times=1)
    assert len(provider.list_instances("f")) == 2  # one retry absorbs one 503
    before = len(fake.requests)
    fake.inject("GET", DROPLETS, Fault.slow(0), times=1)  # page 1 answers normally
    fake.inject("GET", DROPLETS, Fault.http(500), times=READ_ATTEMPTS)  # page 2 keeps failing
    with pytest.raises(TransientError, match="page 2"):
        provider.list_instances("f")
    assert [(r.param("page"), r.status) for r in fake.requests[before:]] == \
        [("1", 200)] + [("2", 500)] * READ_ATTEMPTS


def test_refused_connections_are_transient(clock: FakeClock) -> None:
    provider = DigitalOceanProvider(token="t", api_url=f"http://127.0.0.1:{free_port()}", clock=clock,
                                    sleep=clock.sleep, timeout_s=2.0)
    with pytest.raises(TransientError, match="ServiceRequestError"):
        provider.list_instances("f")
    assert len(clock.slept) == READ_ATTEMPTS - 1  # retried on the virtual clock, bounded


def test_get_retry_on_500_then_success_waits_on_the_injected_sleep(harness: DOHarness) -> None:
    made = harness.provider.create(spec(harness, 1))
    harness.fake.inject("GET", DROPLETS, Fault.http(500))
    listed = harness.provider.list_instances("contract")
    assert [i.id for i in listed] == [made.instances[0].id]
    statuses = [r.status for r in harness.fake.calls("GET", DROPLETS)]
    assert statuses[:2] == [500, 200]
    assert harness.clock.slept and all(0 < s <= 4 for s in harness.clock.slept)


# ---------------------------------------------------------------- create


def test_create_23_sends_three_batches_of_at_most_10(harness: DOHarness) -> None:
    result = harness.provider.create(spec(harness, 23, token="big"))
    posts = harness.fake.calls("POST", DROPLETS)
    assert [len(p.body["names"]) for p in posts] == [10, 10, 3]
    assert [n for p in posts for n in p.body["names"]] == [f"big-{i}" for i in range(23)]
    assert len(result.instances) == 23 and len(harness.fake.live()) == 23


def test_capacity_falls_back_and_remembers_the_miss(harness: DOHarness) -> None:
    harness.fake.block(H100, "tor1")
    first = harness.provider.create(spec(harness, 1, token="c1"))
    assert (first.size, first.region) == (H100, "nyc2")
    assert any("tor1" in n and "no capacity" in n for n in first.notes)
    posts = harness.fake.calls("POST", DROPLETS)
    assert [(p.body["size"], p.body["region"]) for p in posts] == [(H100, "tor1"), (H100, "nyc2")]

    second = harness.provider.create(spec(harness, 1, token="c2"))  # the miss is remembered: no POST to it
    assert (second.size, second.region) == (H100, "nyc2")
    assert any("skipped" in n for n in second.notes)
    assert len(harness.fake.calls("POST", DROPLETS)) == 3

    harness.clock.advance(301)  # capacity_miss_ttl_s passed: tor1 is tried first again
    harness.fake.blocked.clear()
    third = harness.provider.create(spec(harness, 1, token="c3"))
    assert (third.size, third.region) == (H100, "tor1")


def test_when_every_candidate_is_remembered_they_are_still_tried(harness: DOHarness) -> None:
    target = harness.target()
    harness.block_all_candidates(target)
    with pytest.raises(CapacityError, match="no candidate had capacity"):
        harness.provider.create(LaunchSpec(target=target, count=1, token="x1"))
    assert len(harness.fake.calls("POST", DROPLETS)) == 4
    harness.fake.blocked.clear()
    result = harness.provider.create(LaunchSpec(target=target, count=1, token="x2"))
    assert (result.size, result.region) == (H100, "tor1")


def test_catalog_rules_out_pairs_the_size_is_not_offered_in(harness: DOHarness) -> None:
    target = PoolTarget(fleet="contract", pool="p1", sizes=("gpu-h100x8-640gb", H100), regions=("tor1",),
                        options={"image": "gpu-h100x1-base"})
    result = harness.provider.create(LaunchSpec(target=target, count=1, token="cat"))
    assert result.size == H100
    assert any("not offered" in n for n in result.notes)
    assert [p.body["size"] for p in harness.fake.calls("POST", DROPLETS)] == [H100]


def test_droplet_limit_raises_quota_exceeded(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.droplet_limit = 2
    h = DOHarness(provider=make(fake, clock), fake=fake, clock=clock)
    fake.add_droplet("mine-elsewhere", "s-1vcpu-1gb", "nyc1", ["web"], image="ubuntu-24-04-x64")
    assert h.provider.headroom(h.target()).machines == 1  # every Droplet on the account counts
    with pytest.raises(QuotaExceeded):
        h.provider.create(spec(h, 2))
    assert len(fake.calls("POST", DROPLETS)) == 1  # quota is not a per-candidate miss


def test_500_on_create_is_not_retried(harness: DOHarness) -> None:
    harness.fake.inject("POST", DROPLETS, Fault.http(500))
    with pytest.raises(TransientError, match="creating 2 droplets"):
        harness.provider.create(spec(harness, 2))
    assert len(harness.fake.calls("POST", DROPLETS)) == 1
    assert harness.fake.live() == []


@pytest.mark.parametrize("fault", [Fault.lost(), Fault.lost(status=500)], ids=["dropped", "500"])
def test_lost_create_response_is_found_by_token(harness: DOHarness, fault: Fault) -> None:
    harness.fake.inject("POST", DROPLETS, fault)
    with pytest.raises(TransientError, match="next tick finds it by token|HTTP 500"):
        harness.provider.create(spec(harness, 3, token="lost1"))
    assert len(harness.fake.calls("POST", DROPLETS)) == 1
    by_token = [i for i in harness.provider.list_instances("contract") if i.token == "lost1"]
    assert sorted(i.name for i in by_token) == ["lost1-0", "lost1-1", "lost1-2"]


def test_a_later_batch_failing_returns_what_was_made(harness: DOHarness) -> None:
    harness.fake.inject("POST", DROPLETS, Fault.slow(0), times=1)  # batch 1 passes
    harness.fake.inject("POST", DROPLETS, Fault.http(503), times=1)  # batch 2 fails
    result = harness.provider.create(spec(harness, 15, token="part"))
    assert len(result.instances) == 10
    assert any("stopped after 10 of 15" in n for n in result.notes)
    assert len(harness.fake.calls("POST", DROPLETS)) == 2


def test_slow_create_times_out_as_transient_and_is_adopted(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    provider = make(fake, clock, timeout_s=0.3)
    h = DOHarness(provider=provider, fake=fake, clock=clock)
    fake.inject("POST", DROPLETS, Fault.slow(1.0))
    with pytest.raises(TransientError, match="creating 1 droplets"):
        provider.create(spec(h, 1, token="slow"))
    assert [i.token for i in provider.list_instances("contract")] == ["slow"]


def test_invalid_options_never_reach_the_api(harness: DOHarness) -> None:
    with pytest.raises(InvalidRequest, match="64 KiB"):
        harness.provider.create(spec(harness, 1, user_data="x" * (64 * 1024 + 1)))
    with pytest.raises(InvalidRequest, match="image"):
        harness.provider.create(spec(harness, 1, image=""))
    assert harness.fake.calls("POST") == []
    with pytest.raises(InvalidRequest, match="invalid image"):  # the API's own 422
        harness.provider.create(spec(harness, 1, image="no-such-image"))


# ---------------------------------------------------------------- rate limits


def test_429_waits_as_told_then_finishes(harness: DOHarness) -> None:
    harness.fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=7), times=2)
    assert harness.provider.list_instances("contract") == []
    assert harness.clock.slept == [7.0, 7.0]
    assert [r.status for r in harness.fake.calls("GET", DROPLETS)] == [429, 429, 200, 200]


def test_429_on_create_waits_and_creates_once(harness: DOHarness) -> None:
    harness.fake.inject("POST", DROPLETS, Fault.rate_limited(retry_after=2))
    result = harness.provider.create(spec(harness, 2))
    assert len(result.instances) == 2 and len(harness.fake.live()) == 2
    assert [r.status for r in harness.fake.calls("POST", DROPLETS)] == [429, 202]


def test_429_storm_is_bounded(harness: DOHarness) -> None:
    harness.fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=1), times=100)
    with pytest.raises(RateLimited) as info:
        harness.provider.list_instances("contract")
    assert info.value.retry_after_s == 1.0
    assert len(harness.fake.calls("GET", DROPLETS)) == RATE_LIMIT_WAITS + 1


def test_429_without_retry_after_waits_for_reset_only_when_remaining_is_zero(harness: DOHarness) -> None:
    reset = int(harness.clock.now) + 30
    harness.fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=None, remaining=0, reset=reset))
    harness.provider.list_instances("contract")
    assert harness.clock.slept == [30.0]
    harness.fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=None, remaining=5, reset=reset + 60))
    with pytest.raises(RateLimited):
        harness.provider.list_instances("contract")


def test_a_long_retry_after_is_left_to_the_next_tick(harness: DOHarness) -> None:
    harness.fake.inject("GET", DROPLETS, Fault.rate_limited(retry_after=600))
    with pytest.raises(RateLimited) as info:
        harness.provider.list_instances("contract")
    assert info.value.retry_after_s == 600 and harness.clock.slept == []


def test_low_remaining_slows_down_and_never_storms(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.hourly_limit = 30
    provider = make(fake, clock)
    with pytest.raises(RateLimited, match="no DigitalOcean requests left"):
        for _ in range(40):
            provider.list_instances("f")
    assert len(fake.requests) == 30  # the whole hourly budget, not one request more
    assert all(r.status == 200 for r in fake.requests)  # it stopped before the API had to say 429
    assert len(clock.slept) >= 15  # paced once remaining ran low


# ---------------------------------------------------------------- destroy, auth, headroom, price


def test_destroy_missing_and_failing_ids(harness: DOHarness) -> None:
    made = harness.provider.create(spec(harness, 2))
    a, b = (i.id for i in made.instances)
    assert harness.provider.destroy(["999", a]) == []  # 999 never existed: counts as destroyed
    harness.fake.inject("DELETE", rf"{DROPLETS}/{b}", Fault.http(500), times=READ_ATTEMPTS)
    (failure,) = harness.provider.destroy([b, "not-a-number"])[:1]
    assert failure.id == b and isinstance(failure.error, TransientError)
    assert [i.id for i in harness.provider.list_instances("contract")] == [b]  # retried next tick
    assert harness.provider.destroy([b]) == []
    assert harness.fake.live() == []


def test_auth_error_stops_destroying_the_rest(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    provider = make(fake, clock, token="dop_v1_revoked_secret")
    failures = provider.destroy(["1", "2", "3"])
    assert [f.id for f in failures] == ["1", "2", "3"]
    assert all(isinstance(f.error, AuthError) for f in failures)
    assert len(fake.calls("DELETE")) == 1


def test_401_is_an_auth_error_without_the_token(fake: FakeDigitalOcean, clock: FakeClock,
                                                caplog: pytest.LogCaptureFixture) -> None:
    secret = "dop_v1_wrong_secret_5f3c78dc9851d957"
    caplog.set_level(logging.DEBUG)
    provider = make(fake, clock, token=secret)
    h = DOHarness(provider=provider, fake=fake, clock=clock)
    with pytest.raises(AuthError) as info:
        provider.list_instances("contract")
    with pytest.raises(AuthError) as on_create:
        provider.create(spec(h, 1))
    for err in (info.value, on_create.value):
        assert "401" in str(err) and secret not in str(err) and secret not in repr(err.__cause__)
    assert len(fake.calls("GET", DROPLETS)) == 1  # auth is not retried
    assert secret not in caplog.text


def test_plain_http_is_refused_except_to_loopback() -> None:
    with pytest.raises(InvalidRequest, match="loopback"):
        DigitalOceanProvider(token="t", api_url="http://api.example.com")
    with pytest.raises(AuthError):
        DigitalOceanProvider(token="", api_url="https://api.digitalocean.com")


def test_headroom_and_its_unknown_case(harness: DOHarness) -> None:
    harness.fake.droplet_limit = 10
    harness.provider.create(spec(harness, 3))
    harness.fake.add_droplet("web-1", "s-1vcpu-1gb", "nyc1", [], image="ubuntu-24-04-x64")
    room = harness.provider.headroom(harness.target())
    assert room.machines == 6 and "droplet_limit 10" in room.note
    counts = len(harness.fake.calls("GET", DROPLETS))
    assert harness.provider.headroom(harness.target()).machines == 6  # the pools of one tick share it
    assert len(harness.fake.calls("GET", DROPLETS)) == counts
    harness.clock.advance(COUNT_REUSE_S)
    harness.fake.inject("GET", DROPLETS, Fault.http(500), times=READ_ATTEMPTS)  # the count fails
    unknown = harness.provider.headroom(harness.target())
    assert unknown.machines is None and "unknown" in unknown.note
    assert len(harness.fake.calls("GET", "/v2/account")) == 1  # the limit is cached, the counts are not
    harness.clock.advance(301)
    harness.fake.inject("GET", "/v2/account", Fault.http(500), times=READ_ATTEMPTS)
    assert harness.provider.headroom(harness.target()).machines is None


def test_price_comes_from_the_cached_size_catalog(harness: DOHarness) -> None:
    assert harness.provider.price(L40S, "tor1") == 1.57
    assert harness.provider.price("gpu-nope") is None
    assert len(harness.fake.calls("GET", "/v2/sizes")) == 1  # cached
    harness.fake.sizes[2]["price_hourly"] = 1.99
    harness.clock.advance(301)
    harness.fake.inject("GET", "/v2/sizes", Fault.http(500), times=READ_ATTEMPTS)
    assert harness.provider.price(L40S) == 1.57  # stale beats none while the API fails
    assert harness.provider.price(L40S) == 1.99


def test_sizes_catalog_follows_pages(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    fake.max_per_page = 2
    assert make(fake, clock).price("gpu-mi300x1-192gb") == 1.99  # the 5th size, on page 3
    assert [r.param("page") for r in fake.calls("GET", "/v2/sizes")] == ["1", "2", "3"]


def test_a_programming_error_inside_a_call_propagates_unwrapped_and_unretried(harness: DOHarness,
                                                                             monkeypatch) -> None:
    calls = []

    def broken(**kwargs: object) -> None:
        calls.append(kwargs)
        raise TypeError("list() got an unexpected keyword argument")

    monkeypatch.setattr(harness.provider._client.droplets, "list", broken)
    with pytest.raises(TypeError, match="unexpected keyword") as caught:
        harness.provider.list_instances("contract")
    assert caught.value.__cause__ is None and len(calls) == 1 and harness.clock.slept == []


def test_errors_carry_the_api_error_id_and_kind(harness: DOHarness) -> None:
    harness.block_all_candidates(harness.target())
    with pytest.raises(CapacityError) as caught:
        harness.provider.create(spec(harness, 1))
    assert caught.value.kind is ErrorKind.CAPACITY and caught.value.code == "unprocessable_entity"
    harness.fake.inject("GET", DROPLETS, Fault.http(503), times=READ_ATTEMPTS)
    with pytest.raises(TransientError) as transient:
        harness.provider.list_instances("contract")
    assert transient.value.kind is ErrorKind.TRANSIENT and transient.value.code


def test_capabilities_are_the_clouds() -> None:
    caps = DigitalOceanProvider.capabilities
    assert not caps.local_prices and caps.bills_stopped_in_full and not caps.spot
