"""tus uploads: one row per /v1/uploads/{id} (offset, job parameters, the job made at the end).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "uploads" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="default"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("upload_offset", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("metadata", sa.Text(), nullable=False, server_default=""),
        sa.Column("params", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_uploads_state", "uploads", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_uploads_state", "uploads")
    op.drop_table("uploads")
