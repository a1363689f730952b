"""known failures from the labelled attempts alone: a partial index over the attempts a known failure labelled

Counting known failures (`imageci flaky`'s known-failure lines, the dashboard's flaky page) read every attempt
of every version to find the few a tracker labelled: 0.2 s on a catalog of a million attempts, for none.
Index only the labelled ones, by when they started (``store.failurelookups.known_counts``).

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_attempts_known", "attempts", ["started_at"],
                    sqlite_where=sa.text("known IS NOT NULL"), postgresql_where=sa.text("known IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_attempts_known", "attempts")
