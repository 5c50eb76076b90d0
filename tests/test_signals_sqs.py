"""`sqs` through boto3 against moto's server over HTTP (the `aws_env` fixture)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from fleet.config import SqsSource
from fleet.signals import read_source
from fleet.signals.sqs import region_of
from tests.prometheus_harness import JsonResponder, Route
from tests.servers import free_port
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness


@pytest.fixture
def sqs(aws_env):
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=aws_env)


def src(queue_url: str, endpoint_url: str, **kw) -> SqsSource:
    return SqsSource(type="sqs", queue_url=queue_url, endpoint_url=endpoint_url, region="us-east-1", **kw)


def test_waiting_and_in_flight_messages(sqs, aws_env):
    url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"job-{i}")
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    assert len(taken) == 2  # moto returns exactly what was asked: 3 waiting, 2 in flight

    both = read_source(src(url, aws_env))
    assert (both.value, both.error) == (5.0, None)
    assert both.source == f"sqs {url}"
    waiting = read_source(src(url, aws_env, include_in_flight=False))
    assert waiting.value == 3.0

    sqs.delete_message(QueueUrl=url, ReceiptHandle=taken[0]["ReceiptHandle"])
    assert read_source(src(url, aws_env)).value == 4.0


def test_empty_queue_reads_zero(sqs, aws_env):
    url = sqs.create_queue(QueueName="idle")["QueueUrl"]
    reading = read_source(src(url, aws_env))
    assert (reading.value, reading.error) == (0.0, None)


def test_region_comes_from_the_config_or_an_aws_queue_url():
    aws_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    assert region_of(SqsSource(type="sqs", queue_url=aws_url)) == "eu-west-1"
    assert region_of(SqsSource(type="sqs", queue_url=aws_url, region="us-east-2")) == "us-east-2"
    assert region_of(SqsSource(type="sqs", queue_url="http://localhost:4566/000000000000/jobs")) is None


class SqsHarness(Harness):
    """moto's server for values and absence; a local server answering
    SQS's JSON protocol for a malformed count, which moto never gives."""

    kind = "sqs"

    def __init__(self, sqs: Any, endpoint: str, fake: JsonResponder) -> None:
        self.endpoint = endpoint
        self.url = sqs.create_queue(QueueName="contract")["QueueUrl"]
        for i in range(4):
            sqs.send_message(QueueUrl=self.url, MessageBody=f"job-{i}")
        self.fake = fake

    def value(self) -> tuple[Any, float]:
        return src(self.url, self.endpoint), 4.0

    def nothing(self) -> Any:
        return src(f"{self.endpoint}/123456789012/absent", self.endpoint)

    def down(self, port: int) -> Any:
        return src(f"http://127.0.0.1:{port}/123456789012/jobs", f"http://127.0.0.1:{port}")

    def malformed(self) -> Any:
        return src(f"{self.fake.url}/123456789012/jobs", self.fake.url)

    def silent(self, port: int, timeout_s: float) -> Any:
        endpoint = f"http://127.0.0.1:{port}"
        return src(f"{endpoint}/123456789012/jobs", endpoint, timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # credentials come from the AWS chain only
        monkeypatch.setenv("AWS_SESSION_TOKEN", secret)
        return [src(self.url, self.endpoint), self.nothing(), self.down(free_port())]


@pytest.fixture
def harness(sqs, aws_env) -> Harness:
    answer = {"Attributes": {"ApproximateNumberOfMessages": "lots", "ApproximateNumberOfMessagesNotVisible": "0"}}
    with JsonResponder({"/": Route(body=answer)}) as fake:
        yield SqsHarness(sqs, aws_env, fake)
