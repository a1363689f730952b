"""quarantines: quarantine entries kept in the catalog (added from the CLI, API or dashboard), next to the
suites' quarantine.yaml; a lifted entry is kept with who lifted it and why

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
        sa.Column("test", sa.String(255), nullable=False),
        sa.Column("tracker", sa.Text, nullable=False),
        sa.Column("expires", sa.Date, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("testbeds", sa.Text, nullable=True),
        sa.Column("arch", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(128), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lift_reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_quarantines_product_id", "quarantines", ["product_id"])


def downgrade() -> None:
    op.drop_index("ix_quarantines_product_id", "quarantines")
    op.drop_table("quarantines")
