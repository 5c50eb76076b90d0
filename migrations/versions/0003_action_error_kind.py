"""actions.error_kind: how a failed action failed, as a code (providers.base.ErrorKind)

The create back-off used to parse the outcome's prose ("capacity: ..."); the kind now has
its own column.  Existing failed rows are filled from their outcome's prefix.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 00:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# the kinds an outcome could start with when it was written as "<kind>: <message>"
_KINDS = ("provider", "capacity", "quota", "rate_limited", "transient", "auth", "invalid")


def upgrade() -> None:
    with op.batch_alter_table('actions') as batch:
        batch.add_column(sa.Column('error_kind', sa.String(length=16), nullable=True))
    actions = sa.table('actions', sa.column('status', sa.String), sa.column('outcome', sa.Text),
                       sa.column('error_kind', sa.String))
    for kind in _KINDS:
        op.execute(actions.update()
                   .where(sa.and_(actions.c.status == 'failed', actions.c.outcome.like(f'{kind}:%')))
                   .values(error_kind=kind))


def downgrade() -> None:
    with op.batch_alter_table('actions') as batch:
        batch.drop_column('error_kind')
