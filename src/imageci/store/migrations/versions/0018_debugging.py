"""debugging where it failed: each attempt's findings (the machine's own complaints in its window, JSON),
the run a run repeats (``imageci rerun``), and held testbeds (``--hold-on-failure``)

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("findings", sa.Text, nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("repeats", sa.Integer, nullable=True))
    op.create_table(
        "holds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False, index=True),
        sa.Column("attempt_id", sa.Integer, nullable=True),
        sa.Column("test", sa.String(255), nullable=False),
        sa.Column("testbed", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("owner", sa.String(1024), nullable=False),  # the holder's lock file (imageci.owners)
        sa.Column("pid", sa.Integer, nullable=True),  # the holder's process, on its host
        sa.Column("enter", sa.Text, nullable=False),  # the command that enters it, on its host
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(128), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("holds")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("repeats")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("findings")
