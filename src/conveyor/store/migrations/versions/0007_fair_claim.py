"""Fair claim: an index for its search, and on SQLite a trigger that moves the tenant's
``last_claimed_at`` in the claim's own statement.

``ix_jobs_runnable`` holds only queued jobs, per tenant in claim order (priority, age, id): the
claim finds a tenant's next job, or whether it has one, in one probe. SQLite cannot write two
tables in one statement except through a trigger; PostgreSQL's claim does it in a
data-modifying CTE instead (``store/attempts.py``).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobs_runnable ON jobs "
        "(tenant_id, priority DESC, created_at, id) "
        "WHERE state = 'queued' AND deleted_at IS NULL"
    )
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
    op.execute("DROP INDEX IF EXISTS ix_jobs_runnable")
