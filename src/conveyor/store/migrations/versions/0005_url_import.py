"""URL import: a job may name the URL its input is fetched from.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 creates ``jobs`` from tables.py as it is today, which already has the column on a
    # fresh database: add it only to a database made by an older conveyor.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}
    if "input_url" not in have:
        op.add_column("jobs", sa.Column("input_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("input_url")
