"""`static`: the signal-source contract (a constant has nothing to miss)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.config import StaticSource
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness


class StaticHarness(Harness):
    kind = "static"

    def value(self) -> tuple[Any, float]:
        return StaticSource(type="static", value=7), 7.0


@pytest.fixture
def harness() -> Harness:
    return StaticHarness()
