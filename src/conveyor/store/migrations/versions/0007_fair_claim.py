"""Fair claim on SQLite: a claim moves its tenant's ``last_claimed_at`` in the same statement.

SQLite cannot write two tables in one statement except through a trigger; PostgreSQL's claim
does it in a data-modifying CTE instead (``store/attempts.py``), so this revision does nothing
there.

Revision ID: 0007
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS trg_jobs_claimed AFTER UPDATE OF state ON jobs "
        "WHEN OLD.state = 'queued' AND NEW.state = 'running' "
        "BEGIN UPDATE tenants SET last_claimed_at = NEW.started_at "
        "WHERE id = NEW.tenant_id; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS trg_jobs_claimed")
