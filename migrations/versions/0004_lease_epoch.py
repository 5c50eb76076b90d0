"""leases.epoch and actions.lease_epoch: the fencing token

A replica that takes the lease over bumps its epoch; every action row records the epoch it
was written under, and every write the acting replica makes checks the epoch is still the
lease's (fleet/store/lease.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 01:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('leases') as batch:
        batch.add_column(sa.Column('epoch', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('actions') as batch:
        batch.add_column(sa.Column('lease_epoch', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('actions') as batch:
        batch.drop_column('lease_epoch')
    with op.batch_alter_table('leases') as batch:
        batch.drop_column('epoch')
