"""One contract suite for every signal source (see fleet/signals/base.py).

A test module opts in with:

    from tests.signal_contract import *  # noqa: F403  (the contract tests)

    @pytest.fixture
    def harness(...) -> Harness: ...

The harness says only how to make its source read a value, read nothing, and fail; a
situation the source cannot be in (a static value has no server to be down) is None, and
its test skips saying so.  The contract:

- a reading has a finite float value, no error, no code, and a `source` naming the source;
- a missing reading has `value is None` (never 0), a `Missing` code, an error, and still a
  `source` naming the source: when there is nothing to read (the key, queue, series is
  absent), when the server is down, when its answer is malformed, when it does not answer;
- the read is bounded by the source's timeout;
- a secret (a password or token in the URL or the environment) is never in `source` or `error`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pytest

from fleet.signals import read_source
from fleet.signals.base import Missing, SourceReading
from tests.prometheus_harness import silent_port
from tests.servers import free_port

TIMEOUT_S = 0.4  # the timeout a harness gives a source pointed at a silent port
SLACK_S = 1.5  # what the read may take beyond it (a connect, two queries, a 2-core machine)


@dataclass(frozen=True)
class Seen:
    """A reading as the contract sees it, whatever the source returns."""

    value: float | None
    source: str
    error: str | None
    code: Missing | None


class Harness:
    """A source under the contract.  `kind` starts every description of the source."""

    kind: str = ""

    def value(self) -> tuple[Any, float]:
        """A config that reads a known value, and that value."""
        raise NotImplementedError

    def nothing(self) -> Any | None:
        """A config whose key, queue or series is absent (None: the source has no such thing)."""
        return None

    def down(self, port: int) -> Any | None:
        """A config pointed at 127.0.0.1:`port`, where nothing listens."""
        return None

    def malformed(self) -> Any | None:
        """A config whose answer is not one number of the expected shape."""
        return None

    def silent(self, port: int, timeout_s: float) -> Any | None:
        """A config pointed at 127.0.0.1:`port`, which accepts and never answers."""
        return None

    def with_secret(self, secret: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
        """Configs that carry `secret` (in a URL, or an env var the harness sets): read, and
        failing where the source can fail."""
        return []

    def read(self, cfg: Any) -> Seen:
        reading: SourceReading = read_source(cfg)
        return Seen(reading.value, reading.source, reading.error, reading.code)


def _need(cfg: Any, harness: Harness, what: str) -> Any:
    if cfg is None:
        pytest.skip(f"a {harness.kind} source has no {what}")
    return cfg


def _assert_missing(harness: Harness, seen: Seen, code: Missing) -> None:
    assert seen.value is None, f"a missing reading must be None, never a number: {seen}"
    assert seen.code is code, seen
    assert seen.error, seen
    assert seen.source.startswith(harness.kind), seen


def test_contract_a_value_is_a_finite_number_named_by_its_source(harness: Harness) -> None:
    cfg, expected = harness.value()
    seen = harness.read(cfg)
    assert (seen.error, seen.code) == (None, None)
    assert isinstance(seen.value, float) and math.isfinite(seen.value)
    assert seen.value == pytest.approx(expected)
    assert seen.source.startswith(harness.kind)


def test_contract_nothing_to_read_is_missing_never_zero(harness: Harness) -> None:
    cfg = _need(harness.nothing(), harness, "absent key or queue")
    _assert_missing(harness, harness.read(cfg), Missing.ABSENT)


def test_contract_a_server_that_is_down_is_missing(harness: Harness) -> None:
    cfg = _need(harness.down(free_port()), harness, "server to be down")
    _assert_missing(harness, harness.read(cfg), Missing.UNREACHABLE)


def test_contract_a_malformed_answer_is_missing(harness: Harness) -> None:
    cfg = _need(harness.malformed(), harness, "answer that can be malformed here")
    _assert_missing(harness, harness.read(cfg), Missing.MALFORMED)


def test_contract_a_server_that_never_answers_is_missing_within_the_timeout(harness: Harness) -> None:
    with silent_port() as port:
        cfg = _need(harness.silent(port, TIMEOUT_S), harness, "server to wait for")
        started = time.monotonic()
        seen = harness.read(cfg)
        elapsed = time.monotonic() - started
    _assert_missing(harness, seen, Missing.TIMEOUT)
    assert f"{TIMEOUT_S:g}s" in (seen.error or "")  # the reason says which bound was hit
    assert elapsed < TIMEOUT_S + SLACK_S


def test_contract_a_secret_is_never_shown(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Qx7"
    configs = _need(harness.with_secret(secret, monkeypatch) or None, harness, "secret")
    for cfg in configs:
        seen = harness.read(cfg)
        assert secret not in seen.source, seen
        assert secret not in (seen.error or ""), seen


def test_contract_reads_again_the_same_way(harness: Harness) -> None:
    # a source keeps no state between reads that changes what it says (one connection per read)
    cfg, expected = harness.value()
    first, second = harness.read(cfg), harness.read(cfg)
    assert first.value == second.value == pytest.approx(expected)
    assert first.source == second.source


__all__ = [name for name in dir() if name.startswith("test_contract_")] + ["Harness", "Seen"]
