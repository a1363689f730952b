"""shared state: what a server kept under its home, in the catalog, so that several replicas act as one —
running jobs' live logs (``live_logs`` and their ``live_chunks``) and the dashboard's CSRF key (``site_keys``)

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_logs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False, index=True),  # no foreign key: swept, never cascaded
        sa.Column("name", sa.String(32), nullable=False),  # the sha256 of the job's key, cut
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("test", sa.String(255), nullable=False),
        sa.Column("testbed", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),  # Unix time of the last append
        sa.UniqueConstraint("run_id", "name", name="uq_live_logs_run_name"),
    )
    op.create_table(
        "live_chunks",
        sa.Column("live_log_id", sa.Integer, sa.ForeignKey("live_logs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("offset", sa.Integer, primary_key=True),  # where the chunk starts: one writer per offset
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "site_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("site_keys")
    op.drop_table("live_chunks")
    op.drop_table("live_logs")
