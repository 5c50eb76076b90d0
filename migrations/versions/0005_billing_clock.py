"""billing_clock: where the ledger's clock stood, on both clocks, at the last accrual

A restarted process anchors its billing clock there: on the same host and boot it moves it on
by the monotonic clock (system-wide), elsewhere by the wall clock (fleet/clock.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 01:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'billing_clock',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('billed_to', sa.DateTime(timezone=True), nullable=False),
        sa.Column('wall_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('monotonic_at', sa.Float(), nullable=False),
        sa.Column('boot', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('billing_clock')
