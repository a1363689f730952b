"""an index of runs by status and host: every query command and every run looks for the runs still marked
running on this host (``store.runlookups.running``: runs whose process died are marked aborted), which read
the whole runs table before

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_running", "runs", ["status", "host"])


def downgrade() -> None:
    op.drop_index("ix_runs_running", table_name="runs")
