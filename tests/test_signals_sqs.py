"""`sqs` through boto3 against moto's server over HTTP (the `aws_env` fixture)."""

from __future__ import annotations

import time

import boto3
import pytest

from fleet.config import SqsSource
from fleet.signals import read_source
from fleet.signals.sqs import region_of
from tests.prometheus_harness import silent_port
from tests.servers import free_port


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


def test_missing_queue_is_missing(aws_env):
    reading = read_source(src(f"{aws_env}/123456789012/absent", aws_env))
    assert reading.value is None
    assert "queue does not exist" in reading.error


def test_endpoint_down_is_missing(aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    reading = read_source(src(f"{endpoint}/123456789012/jobs", endpoint))
    assert reading.value is None
    assert "EndpointConnectionError" in reading.error


def test_an_endpoint_that_never_answers_times_out_within_the_bound(aws_env):
    with silent_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        reading = read_source(src(f"{endpoint}/123456789012/jobs", endpoint, timeout_s=0.4))
        elapsed = time.monotonic() - started
    assert reading.value is None
    assert "timed out after 0.4s" in reading.error
    assert elapsed < 2.0  # one attempt: no retries


def test_region_comes_from_the_config_or_an_aws_queue_url():
    aws_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    assert region_of(SqsSource(type="sqs", queue_url=aws_url)) == "eu-west-1"
    assert region_of(SqsSource(type="sqs", queue_url=aws_url, region="us-east-2")) == "us-east-2"
    assert region_of(SqsSource(type="sqs", queue_url="http://localhost:4566/000000000000/jobs")) is None
