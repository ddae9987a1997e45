"""Scale-out on Celery: when each job's broker message went out, and a table of worker nodes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 creates ``jobs`` from tables.py as it is today, which already has these columns on a
    # fresh database: add them only to a database made by an older conveyor.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}
    if "dispatched_at" not in have:
        op.add_column("jobs", sa.Column("dispatched_at", sa.Float(), nullable=True))
    if "dispatches" not in have:
        op.add_column("jobs", sa.Column("dispatches", sa.Integer(), nullable=False,
                                        server_default="0"))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatches")
        batch.drop_column("dispatched_at")
