"""actions.attempt: the candidate a create was last sent to

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 06:25:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('actions') as batch:
        batch.add_column(sa.Column('attempt', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('actions') as batch:
        batch.drop_column('attempt')
