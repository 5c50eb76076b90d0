"""Alembic revisions up and down, on SQLite and PostgreSQL, keeping the rows they touch."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from sqlalchemy import inspect

from fleet.model import ActionKind, ActionStatus, ErrorKind
from fleet.store.db import (
    alembic_config,
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    upgrade,
)
from fleet.store.repo import Store


def _columns(engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_error_kind_revision_fills_failed_creates_from_their_outcome(database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0002")
    store = Store(engine)
    failed = store.begin_action(token="t-cap", pool="p", provider="simulated", kind=ActionKind.CREATE, count=1,
                                now=1.0)
    bad = store.begin_action(token="t-bad", pool="p", provider="simulated", kind=ActionKind.CREATE, count=1,
                             now=2.0)
    with engine.begin() as conn:  # as revision 0002 wrote them: the kind only in the prose
        conn.exec_driver_sql("UPDATE actions SET status='failed', outcome='capacity: no H100 in tor1' "
                             f"WHERE id={failed}")
        conn.exec_driver_sql(f"UPDATE actions SET status='failed', outcome='invalid: bad image' WHERE id={bad}")
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    kinds = {a.token: a.error_kind for a in store.unconfirmed_creates(0.0)}
    assert kinds == {"t-cap": ErrorKind.CAPACITY, "t-bad": ErrorKind.INVALID}
    # the back-off reads the column: the newest failure is invalid (backs off), then capacity ends it
    assert store.create_failure_streak("p") == (1, 2.0)


def test_error_kind_revision_downgrades_and_keeps_the_actions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(engine)
    action = store.begin_action(token="t-1", pool="p", provider="simulated", kind=ActionKind.CREATE, count=2,
                                now=1.0)
    store.finish_action(action, ActionStatus.FAILED, 2.0, "quota: 0 left", error_kind=ErrorKind.QUOTA)
    command.downgrade(alembic_config(engine), "0002")
    assert "error_kind" not in _columns(engine, "actions")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT token, status FROM actions").all() == [("t-1", "failed")]
    upgrade(engine)
    assert "error_kind" in _columns(engine, "actions")
    assert [a.error_kind for a in store.unconfirmed_creates(0.0)] == [ErrorKind.QUOTA]  # refilled from outcome


def test_lease_epoch_revision_downgrades_and_keeps_the_lease(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(engine)
    assert store.try_lease("controller", "a", 60, 1.0) == 1
    command.downgrade(alembic_config(engine), "0003")
    assert "epoch" not in _columns(engine, "leases") and "lease_epoch" not in _columns(engine, "actions")
    upgrade(engine)
    assert store.try_lease("controller", "b", 60, 100.0) == 1  # the old lease expired; epochs start again


@pytest.mark.parametrize("attempt", range(4))
def test_replicas_started_together_on_an_empty_database_both_come_up(database_url, attempt):
    failures: list[BaseException] = []
    engines = [make_engine(database_url) for _ in range(2)]
    start = threading.Barrier(2)

    def up(engine):
        start.wait()
        try:
            ensure_schema(engine)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=up, args=(e,)) for e in engines]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert current_revision(engines[0]) == head_revision(engines[0])
