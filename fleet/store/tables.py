"""The schema, as SQLAlchemy Core tables.  It changes only through Alembic
revisions in migrations/; a test checks the two agree."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

MONEY = Numeric(16, 6)

machines = Table(
    "machines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("provider_id", String(128), nullable=False),
    Column("pool", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("size", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("price_hourly_usd", MONEY, nullable=False),
    Column("token", String(80)),
    Column("spot", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ready_at", DateTime(timezone=True)),
    Column("terminating_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    Column("state_changed_at", DateTime(timezone=True), nullable=False),
    Column("accrued_until", DateTime(timezone=True), nullable=False),
    Column("destroy_attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    UniqueConstraint("provider", "provider_id", name="uq_machines_provider_id"),
)
Index("ix_machines_pool_state", machines.c.pool, machines.c.state)

machine_events = Table(
    "machine_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("machine_id", Integer, ForeignKey("machines.id"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
)
Index("ix_machine_events_machine", machine_events.c.machine_id)

actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(80), nullable=False, unique=True),
    Column("pool", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # fleet.model.ActionKind
    Column("count", Integer, nullable=False),
    Column("size", String(64)),
    Column("region", String(64)),
    Column("machine_ids", JSON),  # destroy: provider ids
    Column("status", String(16), nullable=False),  # fleet.model.ActionStatus
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("launched", Integer, nullable=False, default=0),
    Column("outcome", Text),
    # create: the candidate the provider call was last sent to (opaque to fleet, from the
    # adapter), written before the call: a retry after a crash goes there first
    Column("attempt", String(200)),
    Column("error_kind", String(16)),  # a FAILED action: providers.base.ErrorKind
    Column("lease_epoch", Integer),  # the fencing token of the replica that wrote it
)
Index("ix_actions_pool_kind", actions.c.pool, actions.c.kind, actions.c.created_at)
Index("ix_actions_status", actions.c.status)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("pool", String(64), nullable=False),
    Column("ready", Integer, nullable=False),
    Column("booting", Integer, nullable=False),
    Column("current", Integer, nullable=False),
    Column("recommendation", Integer, nullable=False),
    Column("desired", Integer, nullable=False),
    Column("held", Boolean, nullable=False),
    Column("demand_sample", Float),
    Column("signals", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("actions", JSON, nullable=False),
)
Index("ix_decisions_pool_at", decisions.c.pool, decisions.c.at)

spend_ledger = Table(
    "spend_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("machine_id", Integer, ForeignKey("machines.id"), nullable=False),
    Column("pool", String(64), nullable=False),
    Column("hour_start", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("amount_usd", MONEY, nullable=False),
    UniqueConstraint("machine_id", "hour_start", name="uq_spend_machine_hour"),
)
Index("ix_spend_hour", spend_ledger.c.hour_start)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("epoch", Integer, nullable=False, server_default="0"),  # bumped by every takeover
)

# where the billing clock stood at the last accrual, on the billing and the wall clock
billing_clock = Table(
    "billing_clock",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("billed_to", DateTime(timezone=True), nullable=False),
    Column("wall_at", DateTime(timezone=True), nullable=False),
    Column("monotonic_at", Float, nullable=False),
    Column("boot", String(128), nullable=False),  # the host's boot: its monotonic clock is comparable
)
