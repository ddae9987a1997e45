"""Tenant quotas and usage in the database, and the reservation made with each new job.

The reservation runs in the transaction that inserts the job: on PostgreSQL it first locks
the tenant's row (``SELECT ... FOR UPDATE``), on SQLite the transaction already holds the
database's write lock (``BEGIN IMMEDIATE`` behind the write gate). Either way the counts it reads
cannot change before the commit, in this process or any other: concurrent uploads never
overshoot ``max_queued``, ``bytes_per_day`` or ``storage_bytes``.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, text

from conveyor.quotas.policy import Quotas, Usage, check_upload, utc_day
from conveyor.store.database import Database, Tx

_QUOTA_COLUMNS = ("max_queued", "max_running", "max_upload_bytes", "bytes_per_day",
                  "storage_bytes", "requests_per_s")
_SELECT = f"SELECT {', '.join(_QUOTA_COLUMNS)} FROM tenants WHERE id = :t"
_QUOTAS = text(_SELECT)
_QUOTAS_LOCKED = text(_SELECT + " FOR UPDATE")
_ENSURE = text("INSERT INTO tenants (id, created_at, last_claimed_at) VALUES (:t, :now, 0) "
               "ON CONFLICT (id) DO NOTHING")
_COUNT = text("SELECT count(*) FROM jobs WHERE tenant_id = :t AND state = :state "
              "AND deleted_at IS NULL")
_BYTES_TODAY = text("SELECT bytes FROM tenant_usage WHERE tenant_id = :t AND day = :day")
_STORED = text(
    "SELECT (SELECT COALESCE(SUM(input_size), 0) FROM jobs "
    "        WHERE tenant_id = :t AND deleted_at IS NULL) "
    "     + (SELECT COALESCE(SUM(a.size), 0) FROM artifacts a JOIN jobs j ON j.id = a.job_id "
    "        WHERE j.tenant_id = :t AND j.deleted_at IS NULL)"
)
_ADD_BYTES = text(
    "INSERT INTO tenant_usage (tenant_id, day, bytes) VALUES (:t, :day, :n) "
    "ON CONFLICT (tenant_id, day) DO UPDATE SET bytes = tenant_usage.bytes + excluded.bytes"
)


def _quotas(row: Any) -> Quotas:
    if row is None:
        return Quotas()
    m = row._mapping
    return Quotas(**{c: m[c] for c in _QUOTA_COLUMNS})


def read_usage(conn: Connection, tenant: str, now: float, need: Quotas | None = None) -> Usage:
    """The tenant's usage; with ``need``, only the parts its quotas limit are counted."""

    def wanted(value: object) -> bool:
        return need is None or value is not None

    queued = running = today = stored = 0
    if wanted(need and need.max_queued):
        queued = int(conn.execute(_COUNT, {"t": tenant, "state": "queued"}).scalar_one())
    if need is None:
        running = int(conn.execute(_COUNT, {"t": tenant, "state": "running"}).scalar_one())
    if wanted(need and need.bytes_per_day):
        today = int(conn.execute(_BYTES_TODAY, {"t": tenant, "day": utc_day(now)}).scalar()
                    or 0)
    if wanted(need and need.storage_bytes):
        stored = int(conn.execute(_STORED, {"t": tenant}).scalar_one())
    return Usage(queued=queued, running=running, bytes_today=today, storage_bytes=stored)


def reserve(tx: Tx, tenant: str, size: int, now: float, *, check: bool = True) -> None:
    """Check the tenant's upload quotas for one more job of ``size`` bytes and count the bytes.

    Raises :class:`~conveyor.errors.QuotaExceeded` (or ``UploadOverQuota``); the caller's
    transaction then rolls back and nothing is kept. ``check=False`` only counts: a tus
    upload was checked when it was created, and its last byte always makes its job.
    """
    row = tx.execute(_QUOTAS, {"t": tenant}).first()
    if row is None:
        # A tenant the claim must see (it picks tenants from this table).
        tx.execute(_ENSURE, {"t": tenant, "now": now})
    quotas = _quotas(row)
    if check and quotas.limits_uploads:
        if tx.pg:
            # Serialises this tenant's reservations across connections and processes; the
            # counts below are read after the lock, so they include every earlier commit.
            quotas = _quotas(tx.execute(_QUOTAS_LOCKED, {"t": tenant}).first())
        check_upload(quotas, read_usage(tx.conn, tenant, now, quotas), size, now)
    if size:
        tx.execute(_ADD_BYTES, {"t": tenant, "day": utc_day(now), "n": size})


class TenantQuotas:
    """Reads for the HTTP layer: a tenant's quotas and usage."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def quotas(self, tenant: str) -> Quotas:
        with self.db.reader.connect() as conn:
            return _quotas(conn.execute(_QUOTAS, {"t": tenant}).first())

    def usage(self, tenant: str, need: Quotas | None = None) -> Usage:
        with self.db.reader.connect() as conn:
            return read_usage(conn, tenant, time.time(), need)
