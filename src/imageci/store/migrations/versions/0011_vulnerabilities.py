"""vulnerabilities: feeds imported from files (the Debian Security Tracker's JSON, OSV records) and
what each says of a source package in a release

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vuln_feeds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "vuln_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("feed_id", sa.Integer, sa.ForeignKey("vuln_feeds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("vuln", sa.String(64), nullable=False),
        sa.Column("aliases", sa.Text, nullable=False, server_default=""),
        sa.Column("package", sa.String(255), nullable=False),
        sa.Column("release", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("introduced", sa.String(128), nullable=True),
        sa.Column("fixed", sa.String(128), nullable=True),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_vuln_records_feed_id", "vuln_records", ["feed_id"])
    op.create_index("ix_vuln_records_release_package", "vuln_records", ["release", "package"])


def downgrade() -> None:
    op.drop_index("ix_vuln_records_release_package", "vuln_records")
    op.drop_index("ix_vuln_records_feed_id", "vuln_records")
    op.drop_table("vuln_records")
    op.drop_table("vuln_feeds")
