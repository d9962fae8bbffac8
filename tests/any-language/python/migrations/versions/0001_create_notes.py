"""Notes, with trusted extensions a database owner may create (citext, pgcrypto).

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS citext")
    op.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("body", postgresql.CITEXT, nullable=False),
        sa.Column("token", sa.Text, nullable=False, server_default=sa.text("gen_random_uuid()::text")),
    )


def downgrade() -> None:
    op.drop_table("notes")
