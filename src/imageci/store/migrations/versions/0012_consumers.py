"""consumers: projects that build on a product register their suites; a gating one blocks a promotion that
breaks it (it passed on the current stable version)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("ref", sa.String(255), nullable=True),
        sa.Column("subdir", sa.Text, nullable=True),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("setup", sa.Text, nullable=True),
        sa.Column("wheelhouse", sa.Text, nullable=True),
        sa.Column("timeout", sa.Integer, nullable=False),
        sa.Column("gating", sa.Boolean, nullable=False),
        sa.Column("snapshot", sa.String(64), nullable=True),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_by", sa.String(128), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_consumers_product_id", "consumers", ["product_id"])


def downgrade() -> None:
    op.drop_index("ix_consumers_product_id", "consumers")
    op.drop_table("consumers")
