"""idempotency keys: a retried POST of a run or an attempt is recorded once

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("runs", "attempts"):
        op.add_column(table, sa.Column("idempotency_key", sa.String(128), nullable=True))
        op.create_index(f"ix_{table}_idempotency_key", table, ["idempotency_key"], unique=True)


def downgrade() -> None:
    for table in ("runs", "attempts"):
        op.drop_index(f"ix_{table}_idempotency_key", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("idempotency_key")
