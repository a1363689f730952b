"""runs and attempts: every execution of every test

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image_digest", sa.String(64), nullable=False, index=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("image_digest", sa.String(64), nullable=False, index=True),
        sa.Column("test_id", sa.String(255), nullable=False, index=True),
        sa.Column("test_digest", sa.String(64), nullable=False),
        sa.Column("testbed", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("log_digest", sa.String(64), nullable=True),
    )
    op.create_index("ix_attempts_cache", "attempts", ["image_digest", "test_digest", "testbed", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_attempts_cache", "attempts")
    op.drop_table("attempts")
    op.drop_table("runs")
