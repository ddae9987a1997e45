"""Tenants, API keys and per-tenant usage; jobs get an owner and per-tenant idempotency keys.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_TENANT = "default"


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    have = {c["name"] for c in inspector.get_columns("jobs")}
    if "tenant_id" not in have:
        # A database made by an older conveyor: its jobs belong to the implicit tenant, and the
        # idempotency key becomes unique per tenant instead of server-wide.
        with op.batch_alter_table(
            "jobs", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}
        ) as batch:
            batch.add_column(sa.Column("tenant_id", sa.String(64), nullable=False,
                                       server_default=DEFAULT_TENANT))
            batch.drop_constraint(
                "jobs_idempotency_key_key" if bind.dialect.name == "postgresql"
                else "uq_jobs_idempotency_key", type_="unique")
        op.create_index("ix_jobs_tenant", "jobs",
                        ["tenant_id", "state", sa.text("priority DESC"), "created_at"])
        op.create_index("ux_jobs_idempotency", "jobs", ["tenant_id", "idempotency_key"],
                        unique=True)
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("deleted_at", sa.Float()),
        sa.Column("webhook_secret", sa.Text()),
        sa.Column("webhook_secret_previous", sa.Text()),
        sa.Column("webhook_secret_previous_until", sa.Float()),
        sa.Column("max_queued", sa.Integer()),
        sa.Column("max_running", sa.Integer()),
        sa.Column("max_upload_bytes", sa.BigInteger()),
        sa.Column("bytes_per_day", sa.BigInteger()),
        sa.Column("storage_bytes", sa.BigInteger()),
        sa.Column("requests_per_s", sa.Float()),
        sa.Column("last_claimed_at", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float()),
        sa.Column("revoked_at", sa.Float()),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "tenant_usage",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(sa.text("INSERT INTO tenants (id, created_at, last_claimed_at) "
                       "VALUES (:id, :now, 0)").bindparams(id=DEFAULT_TENANT, now=time.time()))


def downgrade() -> None:
    op.drop_table("tenant_usage")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_index("ux_jobs_idempotency", "jobs")
    op.drop_index("ix_jobs_tenant", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("tenant_id")
