"""`file`: the signal-source contract against JSON files in a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.config import FileSource
from fleet.signals import read_source
from fleet.signals.base import Missing
from tests.signal_contract import *  # noqa: F403  (the contract tests)
from tests.signal_contract import Harness


class FileHarness(Harness):
    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "signals.json"
        self.path.write_text('{"queue": 12, "util": "high"}')

    def value(self) -> tuple[Any, float]:
        return FileSource(type="file", path=self.path, key="queue"), 12.0

    def nothing(self) -> Any:
        return FileSource(type="file", path=self.path, key="absent")

    def malformed(self) -> Any:
        return FileSource(type="file", path=self.path, key="util")


@pytest.fixture
def harness(tmp_path) -> Harness:
    return FileHarness(tmp_path)


def test_a_missing_file_is_absent_and_bad_json_malformed(tmp_path):
    gone = read_source(FileSource(type="file", path=tmp_path / "nowhere.json", key="queue"))
    assert (gone.value, gone.code) == (None, Missing.ABSENT)
    (tmp_path / "bad.json").write_text("{not json")
    bad = read_source(FileSource(type="file", path=tmp_path / "bad.json", key="queue"))
    assert (bad.value, bad.code) == (None, Missing.MALFORMED)
    (tmp_path / "list.json").write_text("[1, 2]")
    listed = read_source(FileSource(type="file", path=tmp_path / "list.json", key="queue"))
    assert (listed.value, listed.code) == (None, Missing.MALFORMED)
