"""namespaces and public products; API tokens (stored hashed, scoped, expiring, revocable)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (SQLite can): a batch copy of products would trip the versions' foreign key
    op.add_column("products", sa.Column("namespace", sa.String(64), nullable=False, server_default="default"))
    op.add_column("products", sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_products_namespace", "products", ["namespace"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(128), nullable=False),  # comma-separated: read,publish,test,promote,admin
        sa.Column("channel", sa.String(32), nullable=True),  # a follower's token sees only this channel
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_index("ix_products_namespace", "products")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("public")
        batch.drop_column("namespace")
