"""versions.architecture; runs.status, host, owner (killed runs are found and marked aborted)

Revision ID: 0003
Revises: 0002
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ARCH = re.compile(r"^architecture:\s*['\"]?([a-z0-9]+)['\"]?\s*(#.*)?$", re.MULTILINE)


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("architecture", sa.String(32), nullable=False, server_default="amd64"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="finished"))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(1024), nullable=True))
    conn = op.get_bind()
    # Versions built before this revision: the architecture their definition named.
    versions = sa.table("versions", sa.column("id", sa.Integer), sa.column("definition", sa.Text),
                        sa.column("architecture", sa.String))
    for vid, text in conn.execute(sa.select(versions.c.id, versions.c.definition)).all():
        m = _ARCH.search(text or "")
        if m and m.group(1) != "amd64":
            conn.execute(versions.update().where(versions.c.id == vid).values(architecture=m.group(1)))
    # Runs that never ended were killed before imageci could record it.
    runs = sa.table("runs", sa.column("ended_at", sa.DateTime), sa.column("status", sa.String))
    conn.execute(runs.update().where(runs.c.ended_at.is_(None)).values(status="aborted"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("owner")
        batch.drop_column("host")
        batch.drop_column("status")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("architecture")
