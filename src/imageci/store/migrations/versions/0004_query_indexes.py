"""indexes for queries at scale: transient failures are found from retried passes

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a transient failure always ends in a pass with attempt > 1: `flaky` starts from those few rows
    op.create_index("ix_attempts_retried", "attempts", ["verdict", "attempt", "started_at"])
    # ... and reads each one's attempts by run × test × testbed
    op.create_index("ix_attempts_group", "attempts", ["run_id", "test_id", "testbed"])


def downgrade() -> None:
    op.drop_index("ix_attempts_group", "attempts")
    op.drop_index("ix_attempts_retried", "attempts")
