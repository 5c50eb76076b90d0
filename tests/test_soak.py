"""A short seeded fault soak through real ticks on SQLite and PostgreSQL (bench/soak.py runs
thousands): every invariant of tests/soak.py holds under every fault mixed."""

from __future__ import annotations

import pytest

from tests.soak import run_soak


@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_soak_with_every_fault_mixed_breaks_no_invariant(database_url, tmp_path, seed):
    result = run_soak(database_url, tmp_path, ticks=150, seed=seed)
    assert result.violations == []
    assert sum(result.injected.values()) > 20 and result.machines_made > 5  # the soak did soak
