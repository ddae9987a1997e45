"""tus uploads on object storage: the chunk each PATCH appended, so any server can go on.

Uploads were staged on the disk of the server that received them, so with several API
machines every request of one upload had to reach the same machine (sticky sessions). On S3
each PATCH now stores its bytes as an object of its own, recorded here, under the prefix of
the upload's job (``ix_uploads_job`` finds the upload of a job's chunks).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "upload_chunks" not in inspector.get_table_names():
        op.create_table(
            "upload_chunks",
            sa.Column("upload_id", sa.String(32), primary_key=True),
            sa.Column("start", sa.BigInteger(), primary_key=True),
            sa.Column("length", sa.BigInteger(), nullable=False),
            sa.Column("key", sa.Text(), nullable=False),
        )
    if "ix_uploads_job" not in {i["name"] for i in inspector.get_indexes("uploads")}:
        op.create_index("ix_uploads_job", "uploads", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_uploads_job", "uploads")
    op.drop_table("upload_chunks")
