"""transient failures from the retries alone: a partial index over second attempts

ix_attempts_retried (verdict, attempt, started_at) covered every attempt, and
planners judged it unselective (almost every attempt is a pass), so `flaky`
scanned the table. A retried test has exactly one second attempt: index only
those (one row per retried run × test × testbed, no DISTINCT needed), and give
the group index the columns `flaky` reads (attempt, verdict).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_attempts_retried", "attempts")
    op.create_index("ix_attempts_retries", "attempts", ["started_at", "run_id", "test_id", "testbed"],
                    sqlite_where=sa.text("attempt = 2"), postgresql_where=sa.text("attempt = 2"))
    op.drop_index("ix_attempts_group", "attempts")
    op.create_index("ix_attempts_group", "attempts", ["run_id", "test_id", "testbed", "attempt", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_attempts_group", "attempts")
    op.create_index("ix_attempts_group", "attempts", ["run_id", "test_id", "testbed"])
    op.drop_index("ix_attempts_retries", "attempts")
    op.create_index("ix_attempts_retried", "attempts", ["verdict", "attempt", "started_at"])
