"""`redis` against the machine's Redis (127.0.0.1:6379) and a password-protected
redis-server started by the test: lists, streams, consumer groups and every failure."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from typing import Any

import pytest
import redis

from fleet.config import RedisSource
from fleet.signals import read_source
from fleet.signals.base import Missing
from tests.servers import REDIS_HOST, REDIS_PORT, free_port, need_binary, need_tcp
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness

pytestmark = pytest.mark.redis
URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def r():
    need_tcp(REDIS_HOST, REDIS_PORT, "Redis")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def key(r):
    name = f"fleet-test:{uuid.uuid4().hex}"
    yield name
    r.delete(name)


def src(key: str, **kw) -> RedisSource:
    return RedisSource(type="redis", url=kw.pop("url", URL), key=key, **kw)


class RedisHarness(Harness):
    kind = "redis"

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.key = key
        client.rpush(key, *range(5))
        client.set(f"{key}:text", "12")
        self.cleanup = [f"{key}:text"]

    def value(self) -> tuple[Any, float]:
        return src(self.key), 5.0

    def nothing(self) -> Any:
        return src(f"{self.key}:absent")  # mode auto: a missing key is not read as 0

    def down(self, port: int) -> Any:
        return src("jobs", url=f"redis://127.0.0.1:{port}/0")

    def malformed(self) -> Any:
        return src(f"{self.key}:text")

    def silent(self, port: int, timeout_s: float) -> Any:
        return src("jobs", url=f"redis://127.0.0.1:{port}/0", timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("REDIS_PW", secret)
        # the machine's Redis has no password: AUTH with one is refused, and says so
        return [src("jobs", url=f"redis://:{secret}@127.0.0.1:{free_port()}/0"),
                src("jobs", url=f"redis://:{secret}@{REDIS_HOST}:{REDIS_PORT}/0"),
                src("jobs", password_env="REDIS_PW")]


@pytest.fixture
def harness(r, key) -> Harness:
    h = RedisHarness(r, key)
    yield h
    r.delete(*h.cleanup)


@pytest.mark.parametrize("mode", ["auto", "list"])
def test_list_length(r, key, mode):
    r.rpush(key, *[f"job-{i}" for i in range(7)])
    reading = read_source(src(key, mode=mode))
    assert reading.error is None
    assert reading.value == 7.0
    assert reading.age_s == 0.0
    r.lpop(key, 3)
    assert read_source(src(key, mode=mode)).value == 4.0


@pytest.mark.parametrize("mode", ["auto", "stream"])
def test_stream_length(r, key, mode):
    for i in range(5):
        r.xadd(key, {"job": str(i)})
    reading = read_source(src(key, mode=mode))
    assert (reading.value, reading.error) == (5.0, None)


def test_consumer_group_pending_plus_lag(r, key):
    for i in range(10):
        r.xadd(key, {"job": str(i)})
    r.xgroup_create(key, "workers", id="0")
    assert read_source(src(key, mode="group", group="workers")).value == 10.0  # all undelivered: lag 10
    delivered = r.xreadgroup("workers", "w1", {key: ">"}, count=4)[0][1]  # pending 4, lag 6
    assert read_source(src(key, mode="group", group="workers")).value == 10.0
    r.xack(key, "workers", delivered[0][0], delivered[1][0])  # pending 2, lag 6
    reading = read_source(src(key, mode="group", group="workers"))
    assert reading.value == 8.0
    assert reading.source == f"redis group workers of stream {key}@{REDIS_HOST}:{REDIS_PORT}/0"


def test_group_lag_unknown_is_missing(r, key):
    # XDEL of an entry the group has not read makes Redis 7 report lag = nil
    ids = [r.xadd(key, {"job": str(i)}) for i in range(4)]
    r.xgroup_create(key, "workers", id="0")
    r.xreadgroup("workers", "w1", {key: ">"}, count=1)
    r.xdel(key, ids[2])
    if r.xinfo_groups(key)[0].get("lag") is not None:
        pytest.skip("this Redis still reports a lag after XDEL")
    reading = read_source(src(key, mode="group", group="workers"))
    assert reading.value is None
    assert "no lag" in reading.error


def test_unknown_group_and_missing_stream_are_missing(r, key):
    r.xadd(key, {"job": "1"})
    r.xgroup_create(key, "workers", id="0")
    reading = read_source(src(key, mode="group", group="other"))
    assert "no consumer group 'other'" in reading.error and "workers" in reading.error
    missing = read_source(src(f"{key}-absent", mode="group", group="workers"))
    assert missing.value is None and "does not exist" in missing.error


def test_missing_key_is_an_empty_queue_only_when_the_mode_says_so(key):
    auto = read_source(src(key))
    assert auto.value is None
    assert "does not exist" in auto.error and 'mode = "list"' in auto.error
    assert read_source(src(key, mode="list")).value == 0.0
    assert read_source(src(key, mode="stream")).value == 0.0


def test_wrong_type_is_missing(r, key):
    r.set(key, "12")
    auto = read_source(src(key))
    assert auto.value is None and "is a string, not a list or a stream" in auto.error
    listed = read_source(src(key, mode="list"))
    assert listed.value is None and listed.code is Missing.MALFORMED and "WRONGTYPE" in listed.error
    streamed = read_source(src(key, mode="stream"))
    assert streamed.value is None and "WRONGTYPE" in streamed.error


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory):
    """A throwaway redis-server with `requirepass`, on a free port."""
    binary = need_binary("redis-server", "password tests")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "s3cr3t-pw",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port, password="s3cr3t-pw")
    while True:
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server with requirepass did not start")
        time.sleep(0.05)
    yield port, client
    proc.terminate()
    proc.wait(timeout=10)


def test_password_from_env_reads_and_never_shows(secured_redis, monkeypatch):
    port, client = secured_redis
    client.rpush("jobs", "a", "b", "c")
    monkeypatch.setenv("REDIS_PW", "s3cr3t-pw")
    reading = read_source(src("jobs", url=f"redis://127.0.0.1:{port}/0", password_env="REDIS_PW"))
    assert reading.value == 3.0
    in_url = read_source(src("jobs", url=f"redis://:s3cr3t-pw@127.0.0.1:{port}/0"))
    assert in_url.value == 3.0
    assert "s3cr3t-pw" not in in_url.source
    assert in_url.source == f"redis key jobs@127.0.0.1:{port}/0"


def test_wrong_or_absent_password_is_missing_without_the_secret(secured_redis, monkeypatch):
    port, _ = secured_redis
    monkeypatch.setenv("REDIS_PW", "not-the-pw-xyz")
    wrong = read_source(src("jobs", url=f"redis://127.0.0.1:{port}/0", password_env="REDIS_PW"))
    assert wrong.value is None
    assert wrong.code is Missing.AUTH
    assert "not-the-pw-xyz" not in wrong.error + wrong.source
    none = read_source(src("jobs", url=f"redis://127.0.0.1:{port}/0"))
    assert none.value is None and none.code is Missing.AUTH
    monkeypatch.delenv("REDIS_PW")
    unset = read_source(src("jobs", url=f"redis://127.0.0.1:{port}/0", password_env="REDIS_PW"))
    assert unset.value is None and unset.code is Missing.AUTH and "REDIS_PW" in unset.error


def test_group_mode_needs_a_group():
    with pytest.raises(ValueError, match="group"):
        RedisSource(type="redis", key="jobs", mode="group")
    with pytest.raises(ValueError, match="group"):
        RedisSource(type="redis", key="jobs", group="workers")
