"""`rabbitmq` against the machine's RabbitMQ (127.0.0.1:5672, guest/guest) over AMQP.

The management plugin is not enabled on the test machine (nothing on :15672), so the
management path is tested against a local HTTP server answering the management API's
real JSON shape for GET /api/queues/{vhost}/{queue}.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pika
import pytest

from fleet.config import RabbitMQSource
from fleet.signals import read_source
from fleet.signals.base import Missing
from tests.prometheus_harness import JsonResponder, Route
from tests.servers import RABBITMQ_HOST, RABBITMQ_PORT, free_port, need_tcp
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness

pytestmark = pytest.mark.rabbitmq
URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"


@pytest.fixture
def channel():
    need_tcp(RABBITMQ_HOST, RABBITMQ_PORT, "RabbitMQ")
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    ch = connection.channel()
    ch.confirm_delivery()  # basic_publish returns once the broker has the message
    yield ch
    connection.close()


@pytest.fixture
def queue(channel):
    name = f"fleet-test-{uuid.uuid4().hex[:12]}"
    channel.queue_declare(queue=name, auto_delete=False)
    yield name
    channel.queue_delete(queue=name)


def src(queue: str, **kw) -> RabbitMQSource:
    return RabbitMQSource(type="rabbitmq", url=kw.pop("url", URL), queue=queue, **kw)


def test_ready_messages_over_amqp(channel, queue):
    assert read_source(src(queue)).value == 0.0
    for i in range(6):
        channel.basic_publish(exchange="", routing_key=queue, body=f"job-{i}".encode())
    reading = read_source(src(queue))
    assert reading.error is None
    assert reading.value == 6.0
    assert reading.source == f"rabbitmq queue {queue} (ready) @ amqp://{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"
    # two taken by a worker and not yet acknowledged: AMQP counts only the ready ones
    for _ in range(2):
        method, _, _ = channel.basic_get(queue=queue, auto_ack=False)
        assert method is not None
    assert read_source(src(queue)).value == 4.0


def test_wrong_password_is_missing_without_the_secret(queue, monkeypatch):
    monkeypatch.setenv("RABBIT_PW", "wr0ng-pw-777")
    reading = read_source(src(queue, password_env="RABBIT_PW"))
    assert (reading.value, reading.code) == (None, Missing.AUTH)
    assert "wr0ng-pw-777" not in reading.error + reading.source


def test_password_from_env_replaces_the_urls(queue, monkeypatch):
    monkeypatch.setenv("RABBIT_PW", "guest")
    reading = read_source(src(queue, url=f"amqp://guest:placeholder@{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F",
                              password_env="RABBIT_PW"))
    assert (reading.value, reading.error) == (0.0, None)
    assert "placeholder" not in reading.source


def test_include_unacked_needs_the_management_api():
    with pytest.raises(ValueError, match="management_url"):
        RabbitMQSource(type="rabbitmq", queue="jobs", include_unacked=True)


# ---------------------------------------------------------------- management API

def queue_json(name: str, ready: int | None, unacked: int | None) -> dict:
    """The fields of RabbitMQ 3.x GET /api/queues/{vhost}/{name} the source uses, and neighbours."""
    body = {
        "name": name, "vhost": "/", "durable": True, "auto_delete": False, "exclusive": False,
        "arguments": {}, "node": "rabbit@host", "state": "running", "consumers": 2,
        "messages_details": {"rate": 0.0}, "messages_ready_details": {"rate": 0.0},
        "messages_unacknowledged_details": {"rate": 0.0},
    }
    if ready is not None:
        body |= {"messages": ready + (unacked or 0), "messages_ready": ready}
    if unacked is not None:
        body["messages_unacknowledged"] = unacked
    return body


@pytest.fixture
def management():
    with JsonResponder({
        "/api/queues/%2F/jobs": Route(body=queue_json("jobs", 7, 3)),
        "/api/queues/batch/gen%20img": Route(body=queue_json("gen img", 11, 5)),
        "/api/queues/%2F/fresh": Route(body=queue_json("fresh", None, None)),
    }) as server:
        yield server


def test_management_ready_and_unacked(management):
    ready = read_source(src("jobs", management_url=management.url))
    assert (ready.value, ready.error) == (7.0, None)
    both = read_source(src("jobs", management_url=management.url, include_unacked=True))
    assert both.value == 10.0
    assert both.source == f"rabbitmq queue jobs (ready+unacked) @ {management.url}"
    auth = management.requests[-1].headers["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"guest:guest"  # from the AMQP URL


def test_management_vhost_and_queue_are_url_encoded_and_credentials_come_from_env(management, monkeypatch):
    monkeypatch.setenv("RABBIT_PW", "m4n4ge-pw")
    mgmt_url = f"http://monitor:ignored@127.0.0.1:{management.port}"
    reading = read_source(src("gen img", url="amqp://app:app@127.0.0.1:5672/batch", management_url=mgmt_url,
                              include_unacked=True, password_env="RABBIT_PW"))
    assert reading.value == 16.0
    assert management.requests[-1].path == "/api/queues/batch/gen%20img"
    auth = management.requests[-1].headers["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"monitor:m4n4ge-pw"
    assert "ignored" not in reading.source and "m4n4ge-pw" not in reading.source


def test_management_missing_queue_and_missing_counters_are_missing(management):
    absent = read_source(src("nope", management_url=management.url))
    assert absent.value is None and absent.code is Missing.ABSENT
    fresh = read_source(src("fresh", management_url=management.url))
    assert fresh.value is None and fresh.code is Missing.MALFORMED and "no numeric messages_ready" in fresh.error


def test_management_down_and_unauthorized_are_missing():
    down = read_source(src("jobs", management_url=f"http://127.0.0.1:{free_port()}"))
    assert down.value is None and down.code is Missing.UNREACHABLE
    with JsonResponder({"/api/queues/%2F/jobs": Route(status=401, body={"error": "not_authorised"})}) as srv:
        denied = read_source(src("jobs", management_url=srv.url))
    assert denied.value is None and denied.code is Missing.AUTH and "HTTP 401" in denied.error


# ---------------------------------------------------------------- the contract

class RabbitMQHarness(Harness):
    """AMQP for values, absence, outages and silence; the management API (the local server)
    for a malformed answer, which AMQP cannot give."""

    kind = "rabbitmq"

    def __init__(self, channel: Any, queue: str, management: JsonResponder) -> None:
        for i in range(3):
            channel.basic_publish(exchange="", routing_key=queue, body=f"job-{i}".encode())
        self.queue = queue
        self.management = management

    def value(self) -> tuple[Any, float]:
        return src(self.queue), 3.0

    def nothing(self) -> Any:
        return src(f"fleet-test-absent-{uuid.uuid4().hex[:8]}")

    def down(self, port: int) -> Any:
        return src("jobs", url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")

    def malformed(self) -> Any:
        return src("fresh", management_url=self.management.url)

    def silent(self, port: int, timeout_s: float) -> Any:
        return src("jobs", url=f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("RABBIT_PW", secret)
        return [src(self.queue, url=f"amqp://guest:{secret}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"),
                src(self.queue, password_env="RABBIT_PW"),
                src("jobs", url=f"amqp://guest:{secret}@127.0.0.1:{free_port()}/%2F"),
                src("jobs", url=f"amqp://guest:{secret}@127.0.0.1:5672/%2F", management_url=self.management.url),
                src("jobs", management_url=f"http://guest:{secret}@127.0.0.1:{free_port()}")]


@pytest.fixture
def harness(channel, queue, management) -> Harness:
    return RabbitMQHarness(channel, queue, management)
