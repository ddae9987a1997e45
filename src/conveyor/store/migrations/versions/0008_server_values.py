"""Values every server of one database shares: the generated webhook secret.

A secret generated into one server's data dir signed only that server's webhooks; with several
API machines on one database, a receiver could verify only some of them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "server_values" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "server_values",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_values")
