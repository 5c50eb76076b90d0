"""`http_json` against a local HTTP server: the number at a dotted path, or a missing reading."""

from __future__ import annotations

import time

import pytest

from fleet.config import HttpJsonSource
from fleet.signals import read_source
from tests.prometheus_harness import JsonResponder, Route, silent_port
from tests.servers import free_port

DOC = {
    "queues": {"imagegen": {"depth": 17, "ratio": 0.25}},
    "workers": [{"pending": 3}, {"pending": 9}],
    "flags": {"busy": True},
    "text": {"depth": "12"},
    "none": {"depth": None},
}


@pytest.fixture
def service():
    with JsonResponder({
        "/status": Route(body=DOC),
        "/broken": Route(status=503, body={"error": "down for maintenance"}),
        "/html": Route(raw=b"<html>not json</html>"),
        "/nan": Route(raw=b'{"depth": NaN}'),
    }) as server:
        yield server


def source(url: str, path: str, **kw) -> HttpJsonSource:
    return HttpJsonSource(type="http_json", url=url, path=path, **kw)


@pytest.mark.parametrize(("path", "expected"), [
    ("queues.imagegen.depth", 17.0),
    ("queues.imagegen.ratio", 0.25),
    ("workers.1.pending", 9.0),
    ("workers.-1.pending", 9.0),
])
def test_reads_the_number_at_the_path(service, path, expected):
    reading = read_source(source(f"{service.url}/status", path))
    assert reading.error is None
    assert reading.value == expected
    assert reading.source == f"http_json {service.url}/status path {path}"


@pytest.mark.parametrize(("path", "reason"), [
    ("queues.textgen.depth", "key 'textgen' not found at queues"),
    ("workers.5.pending", "index 5 out of range at workers (length 2)"),
    ("workers.first.pending", "workers is a list; 'first' is not an index"),
    ("queues.imagegen.depth.x", "cannot take 'x' of queues.imagegen.depth: it is a number"),
    ("flags.busy", "not a finite number: boolean True"),
    ("text.depth", "not a finite number: string '12'"),
    ("none.depth", "not a finite number: null"),
    ("queues", "not a finite number: object"),
])
def test_a_path_without_a_number_is_missing(service, path, reason):
    reading = read_source(source(f"{service.url}/status", path))
    assert reading.value is None
    assert reason in reading.error


def test_error_status_bad_json_and_nan_are_missing(service):
    assert "answered HTTP 503" in read_source(source(f"{service.url}/broken", "depth")).error
    assert "did not return JSON" in read_source(source(f"{service.url}/html", "depth")).error
    assert "not a finite number" in read_source(source(f"{service.url}/nan", "depth")).error
    assert "answered HTTP 404" in read_source(source(f"{service.url}/nowhere", "depth")).error


def test_bearer_token_from_env_is_sent_and_never_shown(service, monkeypatch):
    monkeypatch.setenv("QUEUE_TOKEN", "tok-Zq81")
    reading = read_source(source(f"{service.url}/status", "queues.imagegen.depth", token_env="QUEUE_TOKEN",
                                 headers={"X-Team": "ml"}))
    assert reading.value == 17.0
    sent = service.requests[-1].headers
    assert sent["authorization"] == "Bearer tok-Zq81"
    assert sent["x-team"] == "ml"
    assert "tok-Zq81" not in reading.source


def test_unset_token_env_is_missing_without_a_request(service, monkeypatch):
    monkeypatch.delenv("QUEUE_TOKEN", raising=False)
    reading = read_source(source(f"{service.url}/status", "queues.imagegen.depth", token_env="QUEUE_TOKEN"))
    assert reading.value is None
    assert "QUEUE_TOKEN" in reading.error
    assert service.requests == []


def test_credentials_and_query_string_are_stripped_from_the_description(service):
    port = service.port
    url = f"http://user:pa55word@127.0.0.1:{port}/status?api_key=k3y"
    reading = read_source(source(url, "queues.imagegen.depth"))
    assert reading.value == 17.0
    assert service.requests[-1].headers["authorization"].startswith("Basic ")  # still used for the request
    assert "pa55word" not in reading.source and "k3y" not in reading.source
    assert reading.source == f"http_json http://127.0.0.1:{port}/status path queues.imagegen.depth"


def test_server_down_is_missing():
    reading = read_source(source(f"http://127.0.0.1:{free_port()}/status", "depth"))
    assert reading.value is None
    assert "cannot connect" in reading.error


def test_a_server_that_never_answers_times_out_within_the_bound():
    with silent_port() as port:
        started = time.monotonic()
        reading = read_source(source(f"http://127.0.0.1:{port}/status", "depth", timeout_s=0.3))
        elapsed = time.monotonic() - started
    assert reading.value is None
    assert "timed out after 0.3s" in reading.error
    assert elapsed < 2.0
