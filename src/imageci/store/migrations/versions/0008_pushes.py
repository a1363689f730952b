"""pushes: where a version was pushed (`imageci push`), with the manifest digest the destination holds

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pushes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("manifest_digest", sa.String(71), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pushes_version_id", "pushes", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_pushes_version_id", "pushes")
    op.drop_table("pushes")
