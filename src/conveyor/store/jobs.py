"""Jobs as clients see them: create, read, list, and the user's actions (cancel, retry, delete)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from conveyor.errors import JobConflict, JobNotFound, QuotaExceeded, UploadOverQuota
from conveyor.models import EventType, JobState
from conveyor.store import events as event_log
from conveyor.store.database import Database, Tx, dumps
from conveyor.store.quotas import reserve
from conveyor.store.records import Artifact, Job, NewJob
from conveyor.store.tables import artifacts, jobs
from conveyor.store.transitions import announce_end, move
from conveyor.telemetry.logs import REQUEST_ID

#: The columns a new job is inserted with, written once for uploads and child jobs alike.
_NEW_JOB_COLUMNS = (
    "id", "state", "pipeline", "options", "priority", "max_attempts", "timeout_s", "input_key",
    "input_filename", "input_size", "input_sha256", "media_type", "declared_type", "parent_id",
    "webhook_url", "idempotency_key", "run_after", "created_at", "updated_at", "expires_at",
    "tenant_id",
    "processor_version",
    "input_url",
)
_INSERT_JOB = text(
    f"INSERT INTO jobs ({', '.join(_NEW_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _NEW_JOB_COLUMNS)}) RETURNING *"
)

#: Transaction-level advisory locks on storage keys (the two-int form: its key space is apart
#: from the single-bigint locks in store/db.py, store/events.py and store/dispatching.py).
_KEY_LOCKS = 0x52555345
_LOCK_KEY = text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))")


def insert_job(tx: Tx, new: NewJob, now: float, retention_s: float,
               request_id: str | None = None) -> Any:
    """Insert a queued job with its ``job.queued`` event; it is dispatched after the commit.

    ``request_id`` names the HTTP request that made the job (default: the one being served).
    """
    values = {
        "id": new.id,
        "state": JobState.QUEUED.value,
        "pipeline": new.pipeline,
        "options": dumps(new.options if new.options is not None else {}),
        "priority": new.priority,
        "max_attempts": new.max_attempts,
        "timeout_s": new.timeout_s,
        "input_key": new.input_key,
        "input_filename": new.input_filename,
        "input_size": new.input_size,
        "input_sha256": new.input_sha256,
        "media_type": new.media_type,
        "declared_type": new.declared_type,
        "parent_id": new.parent_id,
        "webhook_url": new.webhook_url,
        "idempotency_key": new.idempotency_key,
        "run_after": now,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + retention_s,
        "tenant_id": new.tenant_id,
        "processor_version": new.processor_version,
        "input_url": new.input_url,
    }
    row = tx.execute(_INSERT_JOB, values).one()
    data: dict[str, Any] = {"pipeline": new.pipeline}
    if new.parent_id is not None:
        data["parent_id"] = new.parent_id
    request_id = request_id or REQUEST_ID.get()
    if request_id is not None:
        # Recorded so a worker's log lines name the request that created the job.
        data["request_id"] = request_id
    event_log.append(tx, new.id, EventType.QUEUED, data, now, request_id)
    tx.made_runnable(new.id, now, pipeline=new.pipeline, priority=new.priority,
                     timeout_s=new.timeout_s)
    return row


def attach(conn: Connection, batch: Sequence[Job]) -> None:
    """Fill in artifacts and child-state counts for ``batch``."""
    if not batch:
        return
    by_id = {j.id: j for j in batch}
    for row in conn.execute(
        select(artifacts).where(artifacts.c.job_id.in_(by_id)).order_by(artifacts.c.name)
    ):
        by_id[row.job_id].artifacts.append(Artifact.from_row(row))
    counts = conn.execute(
        select(jobs.c.parent_id, jobs.c.state, func.count())
        .where(jobs.c.parent_id.in_(by_id))
        .group_by(jobs.c.parent_id, jobs.c.state)
    )
    for parent_id, state, n in counts:
        job = by_id[parent_id]
        job.children = job.children or {"total": 0}
        job.children[state] = int(n)
        job.children["total"] += int(n)


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a queued job. Returns (job, created); an existing Idempotency-Key wins.

        The tenant's upload quotas are checked and its bytes counted in the same transaction
        (:func:`~conveyor.store.quotas.reserve`): over a quota, nothing is inserted.
        """
        return self._create_one(new, None)

    def create_many(
        self, batch: Sequence[tuple[NewJob, str | None]],
    ) -> builtins.list[tuple[Job, bool] | Exception]:
        """Group commit: insert ``batch`` (new job, request id) in one transaction.

        One result per member, in order: (job, created) as :meth:`create` returns it, or the
        member's own error. Each member is reserved against its tenant's quotas and inserted in
        a savepoint: one over a quota gets its own ``QuotaExceeded``, one whose Idempotency-Key
        is taken gets the existing job, and neither fails the others. An error of the
        transaction as a whole (a full disk, a failed commit) propagates; any other failure of
        one member's insert makes every member run alone, so that each gets its own outcome.
        """
        try:
            results = self._insert_together(batch)
        except IntegrityError:
            results = []
            for new, request_id in batch:
                try:
                    results.append(self._create_one(new, request_id))
                except Exception as exc: # handed to that member's request
                    results.append(exc)
            return results
        for i, (new, _request_id) in enumerate(batch):
            lost = results[i]
            if isinstance(lost, IntegrityError) and new.idempotency_key is not None:
                existing = self.by_idempotency_key(new.tenant_id, new.idempotency_key)
                results[i] = lost if existing is None else (existing, False)
        return results

    def _insert_together(
        self, batch: Sequence[tuple[NewJob, str | None]],
    ) -> builtins.list[tuple[Job, bool] | Exception]:
        now = time.time()
        results: builtins.list[tuple[Job, bool] | Exception | None] = [None] * len(batch)
        # Tenants in one order in every batch: on PostgreSQL, reserve() locks each tenant's row.
        order = sorted(range(len(batch)), key=lambda i: batch[i][0].tenant_id)
        with self.db.tx() as tx:
            for i in order:
                new, request_id = batch[i]
                mark = tx.mark()
                try:
                    with tx.conn.begin_nested():
                        reserve(tx, new.tenant_id, new.input_size, now)
                        row = insert_job(tx, new, now, self.db.retention_s, request_id)
                except (IntegrityError, QuotaExceeded, UploadOverQuota) as exc:
                    tx.forget_since(mark)
                    results[i] = exc
                else:
                    results[i] = (Job.from_row(row), True)
        return [r for r in results if r is not None]

    def _create_one(self, new: NewJob, request_id: str | None) -> tuple[Job, bool]:
        try:
            with self.db.tx() as tx:
                now = time.time()
                reserve(tx, new.tenant_id, new.input_size, now)
                row = insert_job(tx, new, now, self.db.retention_s, request_id)
        except IntegrityError:
            existing = (self.by_idempotency_key(new.tenant_id, new.idempotency_key)
                        if new.idempotency_key is not None else None)
            if existing is None:
                raise
            return existing, False
        return Job.from_row(row), True

    def by_idempotency_key(self, tenant_id: str, key: str) -> Job | None:
        """The tenant's job made with this Idempotency-Key (keys are per tenant)."""
        with self.db.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.tenant_id == tenant_id,
                                                  jobs.c.idempotency_key == key)).first()
            return self._load(conn, row)

    def get(self, job_id: str) -> Job | None:
        with self.db.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            return self._load(conn, row)

    @staticmethod
    def _load(conn: Connection, row: Any) -> Job | None:
        if row is None:
            return None
        job = Job.from_row(row)
        attach(conn, [job])
        return job

    def list(
        self,
        *,
        state: str | None = None,
        pipeline: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant_id: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the last id of the previous page (ids sort by time).
        ``tenant_id`` None lists every tenant's jobs."""
        now = time.time()
        stmt = select(jobs).where(jobs.c.deleted_at.is_(None), jobs.c.expires_at > now)
        if tenant_id is not None:
            stmt = stmt.where(jobs.c.tenant_id == tenant_id)
        if state:
            stmt = stmt.where(jobs.c.state == state)
        if pipeline:
            stmt = stmt.where(jobs.c.pipeline == pipeline)
        if parent_id:
            stmt = stmt.where(jobs.c.parent_id == parent_id)
        if cursor:
            stmt = stmt.where(jobs.c.id < cursor)
        stmt = stmt.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self.db.reader.connect() as conn:
            batch = [Job.from_row(r) for r in conn.execute(stmt)]
            more = len(batch) > limit
            batch = batch[:limit]
            attach(conn, batch)
        return batch, (batch[-1].id if more and batch else None)

    def count_by_state(self) -> dict[str, int]:
        with self.db.reader.connect() as conn:
            rows = conn.execute(
                select(jobs.c.state, func.count())
                .where(jobs.c.deleted_at.is_(None))
                .group_by(jobs.c.state)
            )
            return {state: int(n) for state, n in rows}

    def request_cancel(self, job_id: str) -> JobState:
        """Cancel a queued job now (CANCELLED) or ask a running one to stop (RUNNING)."""
        now = time.time()
        with self.db.tx() as tx:
            while True:
                state = tx.execute(
                    select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None))
                ).scalar()
                if state is None:
                    raise JobNotFound(job_id)
                current = JobState(state)
                if current is JobState.QUEUED:
                    row = tx.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                        .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now)
                        .returning(jobs.c.webhook_url)
                    ).first()
                    if row is None:
                        continue  # claimed meanwhile: ask the running attempt instead
                    announce_end(tx, job_id, JobState.CANCELLED, {}, now, webhook_url=row[0],
                                 default_webhook_url=self.db.default_webhook_url)
                    return JobState.CANCELLED
                if current is JobState.RUNNING:
                    asked = tx.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                        .values(cancel_requested=True, updated_at=now)
                    ).rowcount
                    if not asked:
                        continue  # it ended or was requeued meanwhile
                    return JobState.RUNNING
                raise JobConflict(f"job {job_id} already ended ({current})")

    def retry(self, job_id: str) -> None:
        """Queue a failed or cancelled job again, from its first attempt."""
        now = time.time()
        with self.db.tx() as tx:
            ok = move(
                tx, job_id, [JobState.FAILED, JobState.CANCELLED], JobState.QUEUED,
                {
                    "attempts": 0, "run_after": now, "cancel_requested": False,
                    "error_code": None, "error_message": None, "error_retryable": None,
                    "progress_fraction": 0.0, "progress_message": None, "lease_token": None,
                    "result": None, "finished_at": None, "started_at": None, "updated_at": now,
                },
                jobs.c.deleted_at.is_(None),
            )
            if not ok:
                state = tx.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
                if state is None:
                    raise JobNotFound(job_id)
                raise JobConflict(f"only failed or cancelled jobs can be retried (this is {state})")
            event_log.append(tx, job_id, EventType.QUEUED, {"retry": True}, now)
            tx.made_runnable(job_id, now)

    def delete(self, job_id: str) -> builtins.list[str]:
        """Tombstone the job (later reads answer 410); return the storage keys to remove.

        An artifact key that another job's row still names (a reused result) is not returned.
        """
        now = time.time()
        with self.db.tx() as tx:
            input_key = tx.execute(select(jobs.c.input_key).where(jobs.c.id == job_id)).scalar()
            if input_key is None:
                raise JobNotFound(job_id)
            # Tombstoned first: on PostgreSQL this waits for a reuse copying this job's rows
            # (it holds the row), and a later one no longer finds the job (store/reuse.py).
            # A running attempt sees cancel_requested and a cleared token: it stops, and
            # none of its writes can land.
            tx.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(deleted_at=now, cancel_requested=True, lease_token=None, updated_at=now)
            )
            own = list(
                tx.execute(select(artifacts.c.storage_key).where(artifacts.c.job_id == job_id))
                .scalars()
            )
            if self.db.pg:
                # Two jobs sharing keys deleted at once would each see the other's rows and
                # keep the keys for ever: deletes of the same keys take turns (sorted: no
                # deadlock), so the second sees the first's rows gone. SQLite serialises writers.
                for key in sorted(set(own)):
                    tx.execute(_LOCK_KEY, {"space": _KEY_LOCKS, "key": key})
            tx.execute(delete(artifacts).where(artifacts.c.job_id == job_id))
            shared = set(
                tx.execute(select(artifacts.c.storage_key).where(artifacts.c.storage_key.in_(own)))
                .scalars()
            ) if own else set()
        return [input_key, *(key for key in own if key not in shared)]
