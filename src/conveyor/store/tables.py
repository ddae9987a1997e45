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

#: The one tenant of a server that runs without keys (and the owner of jobs made before 0003).
DEFAULT_TENANT = "default"

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
    # Unique per tenant (0003): ux_jobs_idempotency below.
    Column("idempotency_key", String(300)),
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
    # Tenants (0003): the job's owner. The implicit tenant of an open server is ``default``.
    Column("tenant_id", String(64), nullable=False, server_default=DEFAULT_TENANT),
    # Result reuse (0006): the pipeline's processor version(s) when the job was made.
    Column("processor_version", String(1000)),
    # URL import (0005): where a worker fetches the input from. Until it has, input_sha256 is
    # "" (input_size 0, media_type application/octet-stream) and the API shows them as null.
    Column("input_url", Text),
)
Index("ix_jobs_claim", jobs.c.state, jobs.c.priority.desc(), jobs.c.created_at)
Index("ix_jobs_lease", jobs.c.state, jobs.c.lease_expires_at)
Index("ix_jobs_parent", jobs.c.parent_id)
Index("ix_jobs_expires", jobs.c.expires_at)
Index("ix_jobs_tenant", jobs.c.tenant_id, jobs.c.state, jobs.c.priority.desc(), jobs.c.created_at)
Index("ux_jobs_idempotency", jobs.c.tenant_id, jobs.c.idempotency_key, unique=True)
Index("ix_jobs_reuse", jobs.c.tenant_id, jobs.c.input_sha256)
#: The fair claim's search (0007): a tenant's queued jobs in claim order.
_QUEUED = text("state = 'queued' AND deleted_at IS NULL")
Index("ix_jobs_runnable", jobs.c.tenant_id, jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id,
      sqlite_where=_QUEUED, postgresql_where=_QUEUED)

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
#: Reused results share storage keys (0006): a key is removed only when no row names it.
Index("ix_artifacts_storage_key", artifacts.c.storage_key)

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

#: Values every server of the database shares (0008): the generated webhook secret.
server_values = Table(
    "server_values",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

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

#: Tenants (0003): who owns jobs and keys, their webhook secrets and quotas (NULL: no limit).
tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
    # Standard Webhooks secret (``whsec_...``); NULL: the server-wide CONVEYOR_WEBHOOK_SECRET.
    # During a rotation the previous secret signs too, until ``webhook_secret_previous_until``.
    Column("webhook_secret", Text),
    Column("webhook_secret_previous", Text),
    Column("webhook_secret_previous_until", Float),
    Column("max_queued", Integer),
    Column("max_running", Integer),
    Column("max_upload_bytes", BigInteger),
    Column("bytes_per_day", BigInteger),
    Column("storage_bytes", BigInteger),
    Column("requests_per_s", Float),
    # Fair scheduling: when a worker last claimed one of this tenant's jobs.
    Column("last_claimed_at", Float, nullable=False, server_default="0"),
)

#: API keys (0003): only a hash of the secret is stored; the prefix names the key in lists/logs.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("hash", String(128), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated: jobs:read jobs:write admin
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
Index("ix_api_keys_tenant", api_keys.c.tenant_id)

#: Bytes uploaded per tenant per UTC day (0003), for the ``bytes_per_day`` quota.
tenant_usage = Table(
    "tenant_usage",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("bytes", BigInteger, nullable=False, server_default="0"),
)

#: tus uploads (0004): one row per ``/v1/uploads/{id}``. ``upload_offset`` is the durable offset
#: (staged bytes past it, if any, were never acknowledged); ``job_id`` is chosen at creation
#: and the job row is inserted in the transaction that sets ``state`` to ``done``.
uploads = Table(
    "uploads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default=DEFAULT_TENANT),
    Column("state", String(16), nullable=False),  # receiving | done | terminated | expired
    Column("length", BigInteger, nullable=False),
    Column("upload_offset", BigInteger, nullable=False, server_default="0"),
    Column("metadata", Text, nullable=False, server_default=""),  # Upload-Metadata as sent
    Column("params", Text, nullable=False, server_default="{}"),  # the job's parameters (JSON)
    Column("job_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("ix_uploads_state", uploads.c.state, uploads.c.expires_at)
Index("ix_uploads_job", uploads.c.job_id)  # 0009: whose are the chunks under chunks/{job id}/

#: The chunks of tus uploads on object storage (0009): one row per PATCH that appended bytes,
#: written in the transaction that moves the upload's offset from ``start`` to
#: ``start + length``. Several servers append to one upload, each PATCH to its own object.
upload_chunks = Table(
    "upload_chunks",
    metadata,
    Column("upload_id", String(32), primary_key=True),
    Column("start", BigInteger, primary_key=True),
    Column("length", BigInteger, nullable=False),
    Column("key", Text, nullable=False),
)
