"""retention: a version may be pinned (kept whatever retention says, with the reason), and retention may
delete an inactive version's bytes (state `deleted`: its record, events and attempts stay)

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("pinned", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("pinned")
