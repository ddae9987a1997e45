"""Result reuse: a new job made already succeeded from an earlier job's result and artifacts.

A submit with ``reuse`` looks for a job of the same tenant that succeeded, is neither deleted
nor expired, had no child jobs, and was made from the same input (sha256), pipeline, options
and processor version. When there is one, the new job is inserted ``succeeded`` with that
result, ``job.queued`` and ``job.succeeded`` events naming it in ``reused_from``, its webhook
message, and artifact rows that point at the same storage keys. Otherwise it is queued as usual.

Shared keys stay as long as any artifact row names them: :meth:`conveyor.store.jobs.Jobs.delete`
returns only the keys no other row references, and :meth:`Reuse.referenced` tells the prefix
clean-up which keys to keep. On PostgreSQL the earlier job's row is locked (``FOR UPDATE``)
while its rows are copied, and a delete tombstones that row before it counts references, so
a copy and a delete of the same job are serialised either way; two deletes of jobs sharing keys
take turns on advisory locks named by the keys, so one of them removes each key. SQLite
serialises writers.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import exists, insert, literal, select
from sqlalchemy.exc import IntegrityError

from conveyor.errors import JobNotFound
from conveyor.models import EventType, JobState
from conveyor.store import events as event_log
from conveyor.store.database import Database, Tx, dumps
from conveyor.store.jobs import Jobs, insert_job
from conveyor.store.records import Job, NewJob
from conveyor.store.tables import artifacts, jobs
from conveyor.store.transitions import announce_end
from conveyor.telemetry.logs import REQUEST_ID


def _candidates(tx: Tx, new: NewJob, tenant_id: str, now: float) -> list[Any]:
    children = jobs.alias("children")
    return list(tx.execute(
        select(jobs.c.id, jobs.c.options)
        .where(
            jobs.c.tenant_id == tenant_id,
            jobs.c.input_sha256 == new.input_sha256,
            jobs.c.pipeline == new.pipeline,
            jobs.c.processor_version == new.processor_version,
            jobs.c.state == JobState.SUCCEEDED.value,
            jobs.c.deleted_at.is_(None),
            jobs.c.expires_at > now,
            ~exists().where(children.c.parent_id == jobs.c.id),
        )
        .order_by(jobs.c.finished_at.desc())
        .limit(20)
    ))


def find_original(tx: Tx, new: NewJob, tenant_id: str, now: float) -> tuple[str, str] | None:
    """(id, result JSON) of a job whose result ``new`` may reuse, locked until the commit."""
    if new.processor_version is None:
        return None
    wanted = new.options if new.options is not None else {}
    for job_id, options in _candidates(tx, new, tenant_id, now):
        # Options compared as JSON values: key order and spacing do not matter.
        if json.loads(options or "{}") != wanted:
            continue
        row = tx.execute(
            select(jobs.c.result)
            .where(jobs.c.id == job_id, jobs.c.state == JobState.SUCCEEDED.value,
                   jobs.c.deleted_at.is_(None), jobs.c.expires_at > now)
            .with_for_update()
        ).first()
        if row is not None:
            return job_id, row[0]
    return None


def insert_reused(tx: Tx, new: NewJob, tenant_id: str, original: str, result: str | None,
                  now: float, retention_s: float, default_webhook_url: str | None) -> Any:
    """Insert ``new`` as succeeded with ``original``'s result and artifacts (no attempt runs)."""
    row = tx.execute(
        insert(jobs).values(
            id=new.id, state=JobState.SUCCEEDED.value, pipeline=new.pipeline,
            options=dumps(new.options if new.options is not None else {}),
            priority=new.priority, attempts=0, max_attempts=new.max_attempts,
            timeout_s=new.timeout_s, input_key=new.input_key,
            input_filename=new.input_filename, input_size=new.input_size,
            input_sha256=new.input_sha256, media_type=new.media_type,
            declared_type=new.declared_type, progress_fraction=1.0, result=result,
            parent_id=new.parent_id, webhook_url=new.webhook_url,
            idempotency_key=new.idempotency_key, run_after=now, created_at=now,
            started_at=now, finished_at=now, updated_at=now, expires_at=now + retention_s,
            tenant_id=tenant_id, processor_version=new.processor_version,
        ).returning(*jobs.c)
    ).one()
    tx.execute(insert(artifacts).from_select(
        ["job_id", "name", "media_type", "size", "sha256", "storage_key", "created_at"],
        select(literal(new.id), artifacts.c.name, artifacts.c.media_type, artifacts.c.size,
               artifacts.c.sha256, artifacts.c.storage_key, literal(now))
        .where(artifacts.c.job_id == original),
    ))
    queued: dict[str, Any] = {"pipeline": new.pipeline, "reused_from": original}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        queued["request_id"] = request_id
    event_log.append(tx, new.id, EventType.QUEUED, queued, now)
    done = {"result": json.loads(result) if result is not None else None,
            "reused_from": original}
    announce_end(tx, new.id, JobState.SUCCEEDED, done, now, webhook_url=new.webhook_url,
                 default_webhook_url=default_webhook_url)
    return row


class Reuse:
    def __init__(self, db: Database, jobs_: Jobs) -> None:
        self.db = db
        self.jobs = jobs_

    def create(self, new: NewJob, tenant_id: str) -> tuple[Job, bool, str | None]:
        """Create ``new`` from a reusable result, else queued: (job, created, reused_from).

        ``created`` is False when another upload with the same Idempotency-Key committed first
        (that job is returned, as :meth:`Jobs.create` does).
        """
        now = time.time()
        try:
            with self.db.tx() as tx:
                found = find_original(tx, new, tenant_id, now)
                if found is None:
                    row = insert_job(tx, new, now, self.db.retention_s)
                else:
                    row = insert_reused(tx, new, tenant_id, found[0], found[1], now,
                                        self.db.retention_s, self.db.default_webhook_url)
        except IntegrityError:
            if new.idempotency_key is None:
                raise
            existing = self.jobs.by_idempotency_key(tenant_id, new.idempotency_key)
            if existing is None:
                raise
            return existing, False, None
        job = self.jobs.get(new.id) if found is not None else Job.from_row(row)
        if job is None:  # deleted between the commit and this read
            raise JobNotFound(new.id)
        return job, True, found[0] if found is not None else None

    def referenced(self, prefix: str) -> set[str]:
        """Storage keys under ``prefix`` that some artifact row still names."""
        with self.db.reader.connect() as conn:
            return set(conn.execute(
                select(artifacts.c.storage_key)
                .where(artifacts.c.storage_key.startswith(prefix, autoescape=True))
            ).scalars())
