"""Result reuse: the processor version each job was made with; lookups by input and by key.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 creates ``jobs`` and ``artifacts`` from tables.py as it is today, which already has
    # this column and these indexes on a fresh database: add them only where they are missing.
    inspector = sa.inspect(op.get_bind())
    if "processor_version" not in {c["name"] for c in inspector.get_columns("jobs")}:
        op.add_column("jobs", sa.Column("processor_version", sa.String(1000), nullable=True))
    if "ix_jobs_reuse" not in {i["name"] for i in inspector.get_indexes("jobs")}:
        op.create_index("ix_jobs_reuse", "jobs", ["tenant_id", "input_sha256"])
    if "ix_artifacts_storage_key" not in {i["name"] for i in inspector.get_indexes("artifacts")}:
        op.create_index("ix_artifacts_storage_key", "artifacts", ["storage_key"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_storage_key", "artifacts")
    op.drop_index("ix_jobs_reuse", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("processor_version")
