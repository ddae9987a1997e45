"""The schema, in SQLAlchemy Core. Alembic's migrations create exactly these tables.

Times are UNIX seconds as floats: one representation on SQLite and PostgreSQL, cheap to compare
in the claim query.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

#: SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigId = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("pipeline", String(100), nullable=False),
    Column("options", Text, nullable=False, server_default="{}"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("input_key", String(200), nullable=False),
    Column("input_filename", String(300), nullable=False),
    Column("input_size", BigInteger, nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("media_type", String(200), nullable=False),
    Column("declared_type", String(200)),
    Column("progress_fraction", Float, nullable=False, server_default="0"),
    Column("progress_message", Text),
    Column("result", Text),
    Column("error_code", String(100)),
    Column("error_message", Text),
    Column("error_retryable", Boolean),
    Column("parent_id", String(32)),
    Column("webhook_url", Text),
    Column("idempotency_key", String(300), unique=True),
    Column("run_after", Float, nullable=False),
    Column("lease_token", String(64)),
    Column("lease_expires_at", Float),
    Column("worker_id", String(100)),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("deleted_at", Float),
    # Scale-out (0002): when the last broker message for this job was published, and how many
    # were; the reconciler republishes a due job whose message was never sent or predates its
    # last requeue (dispatched_at < run_after).
    Column("dispatched_at", Float),
    Column("dispatches", Integer, nullable=False, server_default="0"),
)
Index("ix_jobs_claim", jobs.c.state, jobs.c.priority.desc(), jobs.c.created_at)
Index("ix_jobs_lease", jobs.c.state, jobs.c.lease_expires_at)
Index("ix_jobs_parent", jobs.c.parent_id)
Index("ix_jobs_expires", jobs.c.expires_at)

artifacts = Table(
    "artifacts",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("media_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("storage_key", String(400), nullable=False),
    Column("created_at", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False),
    Column("type", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("data", Text, nullable=False, server_default="{}"),
)
Index("ix_events_job", events.c.job_id, events.c.id)

#: One row per webhook message, written in the transaction that ends the job.
outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("msg_id", String(64), nullable=False, unique=True),
    Column("job_id", String(32), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | failed | disabled
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)

deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("job_id", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("url", Text, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered | retry | disabled | failed
)
Index("ix_deliveries_job", deliveries.c.job_id, deliveries.c.id)

#: Celery worker nodes, upserted by their watchdog bootstep: /readyz and /metrics count the live
#: ones whatever the broker (scale-out, 0002).
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", Text, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("running", Integer, nullable=False, server_default="0"),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)
