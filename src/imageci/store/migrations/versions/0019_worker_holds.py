"""held testbeds on workers, entered through the server: who serves a hold (a worker's token) and when it
was last heard of, a release asked for, and the pipes that carry a person's terminal to it (two byte
streams each, in the catalog so any replica of the server relays them)

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("holder", sa.String(128), nullable=True))
        batch.add_column(sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("release_asked", sa.String(128), nullable=True))
    op.create_table(
        "hold_pipes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hold_id", sa.Integer, nullable=False, index=True),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken", sa.Boolean, nullable=False),
        sa.Column("up_size", sa.Integer, nullable=False),
        sa.Column("down_size", sa.Integer, nullable=False),
        sa.Column("up_closed", sa.Boolean, nullable=False),
        sa.Column("down_closed", sa.Boolean, nullable=False),
    )
    op.create_table(
        "hold_pipe_chunks",
        sa.Column("pipe_id", sa.Integer, sa.ForeignKey("hold_pipes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stream", sa.Integer, primary_key=True),
        sa.Column("offset", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hold_pipe_chunks")
    op.drop_table("hold_pipes")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("release_asked")
        batch.drop_column("seen_at")
        batch.drop_column("holder")
