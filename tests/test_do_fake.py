"""The DigitalOcean fake itself, over raw HTTP: it must behave like the documented API."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clock import FakeClock
from tests.do_fake import CAPACITY_MESSAGE, FakeDigitalOcean, Fault, LoggedRequest, OpenApiCheck

GPU = "gpu-h100x1-80gb"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeDigitalOcean]:
    with FakeDigitalOcean(clock=clock, boot_seconds=60, max_per_page=3) as server:
        yield server
        # Every answer must match the spec; requests here are raw and sometimes bad on purpose.
        assert OpenApiCheck().all(server.requests, requests=False) == len(server.requests)


def call(fake: FakeDigitalOcean, method: str, path: str, body: Any = None, *,
         token: str | None = "", timeout: float = 5.0) -> tuple[int, Any, dict[str, str]]:
    host, port = fake.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or fake.token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def create(fake: FakeDigitalOcean, names: list[str], size: str = GPU, region: str = "tor1",
           tags: list[str] | None = None) -> tuple[int, Any, dict[str, str]]:
    return call(fake, "POST", "/v2/droplets", {"names": names, "size": size, "region": region,
                                                 "image": "gpu-h100x1-base", "tags": tags or ["fleet:f"]})


def test_requests_without_the_token_are_refused(fake: FakeDigitalOcean) -> None:
    status, body, _ = call(fake, "GET", "/v2/account", token=None)
    assert status == 401 and body["id"] == "Unauthorized"
    status, _, _ = call(fake, "GET", "/v2/account", token="wrong")
    assert status == 401
    assert call(fake, "GET", "/v2/account")[0] == 200


def test_gpu_droplets_are_listed_only_with_type_gpus(fake: FakeDigitalOcean) -> None:
    fake.add_droplet("cpu-1", "s-1vcpu-1gb", "nyc1", ["fleet:f"], image="ubuntu-24-04-x64")
    assert create(fake, ["gpu-1"])[0] == 202
    default = call(fake, "GET", "/v2/droplets?per_page=200")[1]
    gpus = call(fake, "GET", "/v2/droplets?per_page=200&type=gpus")[1]
    by_tag = call(fake, "GET", "/v2/droplets?per_page=200&tag_name=fleet:f")[1]
    assert [d["name"] for d in default["droplets"]] == ["cpu-1"]
    assert [d["name"] for d in gpus["droplets"]] == ["gpu-1"]
    assert [d["name"] for d in by_tag["droplets"]] == ["cpu-1"]
    status, body, _ = call(fake, "GET", "/v2/droplets?tag_name=fleet:f&type=gpus")
    assert status == 422 and "can not be combined" in body["message"]


def test_pages_follow_links_and_meta(fake: FakeDigitalOcean) -> None:
    for batch in (["a-1", "a-2", "a-3", "a-4"], ["a-5", "a-6", "a-7"]):
        assert create(fake, batch)[0] == 202
    names: list[str] = []
    path = "/v2/droplets?type=gpus&per_page=200"
    pages = 0
    while path:
        status, body, _ = call(fake, "GET", path)
        assert status == 200 and body["meta"]["total"] == 7
        pages += 1
        names += [d["name"] for d in body["droplets"]]
        nxt = body["links"].get("pages", {}).get("next")
        path = nxt.removeprefix("https://api.digitalocean.com") if nxt else ""
    assert pages == 3  # max_per_page=3 caps per_page=200
    assert names == [f"a-{i}" for i in range(1, 8)]
    assert call(fake, "GET", "/v2/droplets?per_page=201")[0] == 400


def test_droplets_boot_on_the_injected_clock(fake: FakeDigitalOcean, clock: FakeClock) -> None:
    status, body, _ = create(fake, ["b-1"])
    assert status == 202 and body["droplets"][0]["status"] == "new"
    droplet_id = body["droplets"][0]["id"]
    clock.advance(59)
    assert call(fake, "GET", f"/v2/droplets/{droplet_id}")[1]["droplet"]["status"] == "new"
    clock.advance(2)
    droplet = call(fake, "GET", f"/v2/droplets/{droplet_id}")[1]["droplet"]
    assert droplet["status"] == "active" and droplet["networks"]["v4"]


def test_create_validates_like_the_api(fake: FakeDigitalOcean) -> None:
    assert create(fake, [f"n-{i}" for i in range(11)])[0] == 422  # at most 10 names
    assert create(fake, ["under_score"])[0] == 422
    assert create(fake, ["x"], size="gpu-nope")[0] == 422
    assert create(fake, ["x"], region="ams3")[0] == 422  # size not offered there
    assert create(fake, ["x"], tags=["bad tag"])[0] == 422
    status, body, _ = call(fake, "POST", "/v2/droplets", {"name": "one", "size": GPU, "image": "gpu-h100x1-base"})
    assert status == 202 and body["droplet"]["region"]["slug"] == "tor1"
    assert len(fake.live()) == 1


def test_blocked_pair_answers_capacity_and_limit_is_enforced(clock: FakeClock) -> None:
    with FakeDigitalOcean(clock=clock, droplet_limit=2) as fake:
        fake.block(GPU, "tor1")
        status, body, _ = create(fake, ["c-1"])
        assert status == 422 and body["message"] == CAPACITY_MESSAGE
        assert create(fake, ["c-1"], region="nyc2")[0] == 202
        status, body, _ = create(fake, ["c-2", "c-3"], region="nyc2")
        assert status == 422 and "droplet limit" in body["message"]
        assert len(fake.live()) == 1


def test_rate_limit_headers_and_429s(clock: FakeClock) -> None:
    with FakeDigitalOcean(clock=clock, hourly_limit=5, burst_limit=3) as fake:
        seen = [call(fake, "GET", "/v2/account") for _ in range(4)]
        assert [s for s, _, _ in seen] == [200, 200, 200, 429]
        assert [h["ratelimit-remaining"] for _, _, h in seen[:3]] == ["4", "3", "2"]
        assert seen[3][2]["retry-after"] == "60"  # burst: the oldest request of the minute expires in 60 s
        clock.advance(61)
        assert [call(fake, "GET", "/v2/account")[0] for _ in range(3)] == [200, 200, 429]
        status, body, headers = seen[-1] = call(fake, "GET", "/v2/account")
        assert status == 429 and "retry-after" not in headers  # hourly: wait for ratelimit-reset
        assert headers["ratelimit-remaining"] == "0"
        assert int(headers["ratelimit-reset"]) == int(clock.now - 61 + 3600)


def test_injected_faults_are_one_shot(fake: FakeDigitalOcean) -> None:
    fake.inject("GET", "/v2/account", Fault.rate_limited(retry_after=3, remaining=0, reset=123), times=2)
    first = call(fake, "GET", "/v2/account")
    assert first[0] == 429 and first[2]["retry-after"] == "3" and first[2]["ratelimit-reset"] == "123"
    assert call(fake, "GET", "/v2/account")[0] == 429
    assert call(fake, "GET", "/v2/account")[0] == 200
    fake.inject("GET", r"/v2/droplets/\d+", Fault.http(500))
    status, body, _ = call(fake, "GET", "/v2/droplets/1")
    assert status == 500 and body["id"] == "server_error"
    assert call(fake, "GET", "/v2/droplets/1")[0] == 404


def test_lost_create_response_still_creates(fake: FakeDigitalOcean) -> None:
    fake.inject("POST", "/v2/droplets", Fault.lost())
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        create(fake, ["l-1", "l-2"])
    fake.inject("POST", "/v2/droplets", Fault.lost(status=500))
    assert create(fake, ["l-3"])[0] == 500
    assert sorted(d["name"] for d in fake.live()) == ["l-1", "l-2", "l-3"]
    assert [r.status for r in fake.calls("POST")] == [0, 500]


def test_slow_answers_are_slow(fake: FakeDigitalOcean) -> None:
    fake.inject("GET", "/v2/account", Fault.slow(0.3))
    started = time.monotonic()
    assert call(fake, "GET", "/v2/account")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_destroy_by_id_and_by_tag(fake: FakeDigitalOcean) -> None:
    ids = [d["id"] for d in create(fake, ["d-1", "d-2"])[1]["droplets"]]
    fake.add_droplet("d-3", "s-1vcpu-1gb", "nyc1", ["other"], image="ubuntu-24-04-x64")
    assert call(fake, "DELETE", f"/v2/droplets/{ids[0]}")[0] == 204
    status, body, _ = call(fake, "DELETE", f"/v2/droplets/{ids[0]}")
    assert status == 404 and body["id"] == "not_found"
    assert call(fake, "DELETE", "/v2/droplets?tag_name=fleet:f")[0] == 204
    assert [d["name"] for d in fake.live()] == ["d-3"]


def test_openapi_check_catches_a_dishonest_answer() -> None:
    check = OpenApiCheck()
    entry = LoggedRequest(method="GET", path="/v2/account", query={}, body=None, status=200,
                          response={"account": {"droplet_limit": "ten"}},
                          headers={"ratelimit-limit": "5", "ratelimit-remaining": "4", "ratelimit-reset": "9"})
    with pytest.raises(AssertionError, match="account"):
        check.response(entry)
    bad_body = LoggedRequest(method="POST", path="/v2/droplets", query={},
                             body={"names": ["a_b"], "size": GPU, "image": "x"})
    with pytest.raises(AssertionError, match="request POST"):
        check.request(bad_body)
    bad_query = LoggedRequest(method="GET", path="/v2/droplets", query={"type": ["tpus"]}, body=None)
    with pytest.raises(AssertionError, match="type"):
        check.request(bad_query)


def test_openapi_check_reads_the_droplet_status_enum_and_nullables(fake: FakeDigitalOcean) -> None:
    droplet_id = fake.add_droplet("s-1", GPU, "tor1", ["fleet:f"], status="off")
    status, body, _ = call(fake, "GET", f"/v2/droplets/{droplet_id}")
    assert status == 200 and body["droplet"]["status"] == "off" and body["droplet"]["kernel"] is None
    fake.set_status(droplet_id, "running")  # not a DO status: the check must refuse it
    call(fake, "GET", f"/v2/droplets/{droplet_id}")
    with pytest.raises(AssertionError, match="running"):
        OpenApiCheck().response(fake.requests[-1])
    fake.requests.pop()  # keep the fixture's whole-log check about honest answers
