"""bisection state: a bisection is kept from its start (``running``, then its finding), with the host and
owner lock of the process that runs it, so one whose process died is told ``aborted``

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bisections") as batch:
        batch.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(512), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE bisections SET ended_at = started_at WHERE ended_at IS NULL")
    with op.batch_alter_table("bisections") as batch:
        batch.drop_column("owner")
        batch.drop_column("host")
        batch.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=False)
