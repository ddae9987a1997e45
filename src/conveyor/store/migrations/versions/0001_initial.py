"""Initial schema: jobs, artifacts, events, webhook outbox and deliveries.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from conveyor.store import tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The first revision creates the tables as declared; later revisions must spell out their DDL.
_TABLES = [tables.jobs, tables.artifacts, tables.events, tables.outbox, tables.deliveries]


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind)
