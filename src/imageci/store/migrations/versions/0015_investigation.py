"""investigation: bisections (what `imageci bisect` found for a version and a test, its result as JSON),
known failures kept per product, and the known failure an attempt's log matched

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bisections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False, index=True),
        sa.Column("test_id", sa.String(255), nullable=False),
        sa.Column("testbed", sa.String(64), nullable=False),
        sa.Column("good_version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("finding", sa.String(32), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    )

    op.create_table(
        "known_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False, index=True),
        sa.Column("test", sa.String(255), nullable=False),
        sa.Column("pattern", sa.Text, nullable=False),
        sa.Column("tracker", sa.Text, nullable=False),
        sa.Column("retry", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires", sa.Date, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_by", sa.String(128), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("known", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("known")
    op.drop_table("known_failures")
    op.drop_table("bisections")
