"""`http_json` against a local HTTP server: the number at a dotted path, or a missing reading."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.config import HttpJsonSource
from fleet.signals import read_source
from fleet.signals.base import Missing
from tests.prometheus_harness import JsonResponder, Route
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness

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


class HttpJsonHarness(Harness):
    kind = "http_json"

    def __init__(self, server: JsonResponder) -> None:
        self.url = server.url

    def value(self) -> tuple[Any, float]:
        return source(f"{self.url}/status", "queues.imagegen.depth"), 17.0

    def nothing(self) -> Any:
        return source(f"{self.url}/status", "queues.textgen.depth")

    def down(self, port: int) -> Any:
        return source(f"http://127.0.0.1:{port}/status", "depth")

    def malformed(self) -> Any:
        return source(f"{self.url}/html", "depth")

    def silent(self, port: int, timeout_s: float) -> Any:
        return source(f"http://127.0.0.1:{port}/status", "depth", timeout_s=timeout_s)

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        monkeypatch.setenv("QUEUE_TOKEN", secret)
        return [source(f"http://user:{secret}@{self.url.removeprefix('http://')}/status?key={secret}",
                       "queues.imagegen.depth", token_env="QUEUE_TOKEN"),
                source(f"http://user:{secret}@{self.url.removeprefix('http://')}/broken?key={secret}", "depth",
                       token_env="QUEUE_TOKEN")]


@pytest.fixture
def harness(service) -> Harness:
    return HttpJsonHarness(service)


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
    broken = read_source(source(f"{service.url}/broken", "depth"))
    assert broken.code is Missing.FAILED and "answered HTTP 503" in broken.error
    assert read_source(source(f"{service.url}/html", "depth")).code is Missing.MALFORMED
    assert read_source(source(f"{service.url}/nan", "depth")).code is Missing.MALFORMED
    nowhere = read_source(source(f"{service.url}/nowhere", "depth"))
    assert nowhere.code is Missing.ABSENT and "answered HTTP 404" in nowhere.error


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
