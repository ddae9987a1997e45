"""The job store: every SQL statement conveyor runs lives in this module.

Workers' writes are fenced by the lease token of their attempt: an ``UPDATE ... WHERE
lease_token = :token`` that matches no row means a newer attempt owns the job, and the write is
refused with :class:`~conveyor.errors.LeaseLost`. State changes go through :meth:`Store._move`,
which consults the pure transition table in :mod:`conveyor.models`.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from conveyor.errors import JobConflict, JobNotFound, LeaseLost
from conveyor.models import TERMINAL_EVENT, EventType, JobError, JobState, check_transition
from conveyor.store import notify
from conveyor.store.db import PG_EVENTS_LOCK, make_engines, migrate, normalise_url, write_gate
from conveyor.store.records import Artifact, Claim, Event, Job, NewJob
from conveyor.store.tables import artifacts, deliveries, events, jobs, outbox

#: Decides what happens after a failed attempt: seconds until the retry, or None to fail.
RetryPolicy = Callable[[JobError, int, int], float | None]

_UNSET: Any = object()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


@dataclass(slots=True)
class Heartbeat:
    alive: bool
    cancel_requested: bool


# The hot statements, written out once. The claim is a single statement: on SQLite the write
# lock makes it atomic; on PostgreSQL, SKIP LOCKED in a materialised CTE (which runs once,
# where "id IN (SELECT ... LIMIT 1)" may be re-planned as a join that claims several rows).
_PICK = """SELECT id FROM jobs
    WHERE state = 'queued' AND run_after <= :now AND deleted_at IS NULL
    ORDER BY priority DESC, created_at, id LIMIT 1"""
_CLAIM_SET = """SET state = 'running', attempts = attempts + 1, lease_token = :token,
    lease_expires_at = :lease, worker_id = :worker, started_at = :now, updated_at = :now,
    progress_fraction = 0, progress_message = NULL"""
_CLAIM_SQLITE = text(
    f"UPDATE jobs {_CLAIM_SET} WHERE id = ({_PICK}) AND state = 'queued' RETURNING *"
)
_CLAIM_PG = text(
    f"WITH chosen AS MATERIALIZED ({_PICK} FOR UPDATE SKIP LOCKED) "
    f"UPDATE jobs {_CLAIM_SET} FROM chosen WHERE jobs.id = chosen.id "
    "AND jobs.state = 'queued' RETURNING jobs.*"
)
_SUCCEED = text(
    """UPDATE jobs SET state = 'succeeded', result = :result, progress_fraction = 1,
    finished_at = :now, updated_at = :now, lease_expires_at = NULL, error_code = NULL,
    error_message = NULL, error_retryable = NULL
    WHERE id = :id AND lease_token = :token AND state = 'running' AND NOT cancel_requested
    RETURNING webhook_url"""
)
_JOB_COLUMNS = (
    "id", "state", "pipeline", "options", "priority", "max_attempts", "timeout_s", "input_key",
    "input_filename", "input_size", "input_sha256", "media_type", "declared_type", "parent_id",
    "webhook_url", "idempotency_key", "run_after", "created_at", "updated_at", "expires_at",
)
_INSERT_JOB = text(
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)}) RETURNING *"
)
_EVENTS_AFTER = text("SELECT * FROM events WHERE id > :after ORDER BY id LIMIT :limit")
_JOB_EVENTS_AFTER = text(
    "SELECT * FROM events WHERE job_id = :job_id AND id > :after ORDER BY id LIMIT :limit"
)
_INSERT_EVENT = text(
    "INSERT INTO events (job_id, type, at, data) VALUES (:job_id, :type, :at, :data) RETURNING id"
)


class Store:
    def __init__(
        self,
        url: str,
        *,
        run_dir: Path,
        retention_s: float = 7 * 86400,
        default_webhook_url: str | None = None,
        durable: bool = True,
    ) -> None:
        self.url = normalise_url(url)
        self.writer, self.reader = make_engines(self.url, durable=durable)
        self.pg = self.writer.dialect.name == "postgresql"
        self._gate = write_gate(self.url)
        self.run_dir = run_dir
        self.retention_s = retention_s
        self.default_webhook_url = default_webhook_url
        self._notifier = notify.SocketNotifier(run_dir)

    # -- lifecycle -------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction (queued behind the other writers on SQLite)."""
        if self._gate is None:
            with self.writer.begin() as conn:
                yield conn
        else:
            with self._gate(), self.writer.begin() as conn:
                yield conn

    def migrate(self) -> None:
        migrate(self.writer)

    def close(self) -> None:
        self._notifier.close()
        if self._gate is not None:
            self._gate.close()
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    def listener(self, channel: str) -> notify.Listener:
        if self.pg:
            return notify.PgListener(self.url, channel)
        return notify.SocketListener(self.run_dir, channel)

    def ping(self) -> None:
        with self.reader.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _wake(self, conn: Connection, channel: str) -> None:
        """Wake listeners of ``channel``: inside the transaction on PostgreSQL (sent at commit)."""
        if self.pg:
            conn.execute(text("SELECT pg_notify(:c, '')"), {"c": f"conveyor_{channel}"})

    def _wake_after_commit(self, *channels: str) -> None:
        if not self.pg:
            for channel in channels:
                self._notifier.notify(channel)

    # -- events ----------------------------------------------------------------------------

    def _emit(self, conn: Connection, job_id: str, etype: EventType, data: Any, now: float) -> int:
        if self.pg:
            # Serialise event writers so that ids become visible in increasing order: a tailer
            # reading "id > last" then never skips a row committed late with a smaller id.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_EVENTS_LOCK})
        row = conn.execute(
            _INSERT_EVENT, {"job_id": job_id, "type": str(etype), "at": now, "data": _dumps(data)}
        ).one()
        self._wake(conn, notify.EVENTS)
        return int(row[0])

    def events_after(
        self, after_id: int, *, job_id: str | None = None, limit: int = 500
    ) -> list[Event]:
        params: dict[str, Any] = {"after": after_id, "limit": limit}
        stmt = _EVENTS_AFTER
        if job_id is not None:
            stmt, params["job_id"] = _JOB_EVENTS_AFTER, job_id
        with self.reader.connect() as conn:
            return [Event.from_row(r) for r in conn.execute(stmt, params)]

    def last_event_id(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())

    # -- creating and reading jobs ---------------------------------------------------------

    def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a queued job. Returns (job, created); an existing Idempotency-Key wins."""
        now = time.time()
        values = {
            "id": new.id,
            "state": JobState.QUEUED.value,
            "pipeline": new.pipeline,
            "options": _dumps(new.options if new.options is not None else {}),
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
            "expires_at": now + self.retention_s,
        }
        try:
            with self._tx() as conn:
                row = conn.execute(_INSERT_JOB, values).one()
                self._emit(conn, new.id, EventType.QUEUED, {"pipeline": new.pipeline}, now)
                self._wake(conn, notify.JOBS)
        except IntegrityError:
            if new.idempotency_key is None:
                raise
            existing = self.find_by_idempotency_key(new.idempotency_key)
            if existing is None:
                raise
            return existing, False
        self._wake_after_commit(notify.JOBS, notify.EVENTS)
        return Job.from_row(row), True

    def find_by_idempotency_key(self, key: str) -> Job | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).first()
        return self._load(row) if row else None

    def get_job(self, job_id: str) -> Job | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            job = Job.from_row(row)
            self._attach(conn, [job])
        return job

    def _load(self, row: Any) -> Job:
        job = Job.from_row(row)
        with self.reader.connect() as conn:
            self._attach(conn, [job])
        return job

    def _attach(self, conn: Connection, batch: Sequence[Job]) -> None:
        """Fill in artifacts and child-state counts for ``batch``."""
        if not batch:
            return
        by_id = {j.id: j for j in batch}
        for row in conn.execute(
            select(artifacts).where(artifacts.c.job_id.in_(by_id)).order_by(artifacts.c.name)
        ):
            m = row._mapping
            by_id[m["job_id"]].artifacts.append(
                Artifact(m["job_id"], m["name"], m["media_type"], m["size"], m["sha256"],
                         m["storage_key"])
            )
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

    def list_jobs(
        self,
        *,
        state: str | None = None,
        pipeline: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the last id of the previous page (ids sort by time)."""
        now = time.time()
        stmt = select(jobs).where(jobs.c.deleted_at.is_(None), jobs.c.expires_at > now)
        if state:
            stmt = stmt.where(jobs.c.state == state)
        if pipeline:
            stmt = stmt.where(jobs.c.pipeline == pipeline)
        if parent_id:
            stmt = stmt.where(jobs.c.parent_id == parent_id)
        if cursor:
            stmt = stmt.where(jobs.c.id < cursor)
        stmt = stmt.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self.reader.connect() as conn:
            batch = [Job.from_row(r) for r in conn.execute(stmt)]
            more = len(batch) > limit
            batch = batch[:limit]
            self._attach(conn, batch)
        return batch, (batch[-1].id if more and batch else None)

    def count_by_state(self) -> dict[str, int]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(jobs.c.state, func.count())
                .where(jobs.c.deleted_at.is_(None))
                .group_by(jobs.c.state)
            )
            return {state: int(n) for state, n in rows}

    # -- state changes -----------------------------------------------------------------------

    def _move(
        self,
        conn: Connection,
        job_id: str,
        allowed_from: Iterable[JobState],
        target: JobState,
        values: dict[str, Any],
        *,
        token: str | None = _UNSET,
    ) -> bool:
        allowed = list(allowed_from)
        for current in allowed:
            check_transition(current, target)
        stmt = update(jobs).where(
            jobs.c.id == job_id, jobs.c.state.in_([s.value for s in allowed])
        )
        if token is not _UNSET:
            stmt = stmt.where(jobs.c.lease_token == token)
        result = conn.execute(stmt.values(state=target.value, **values))
        return bool(result.rowcount)

    def claim_next(self, worker_id: str, lease_s: float) -> Claim | None:
        """Claim the most urgent runnable job in one atomic statement."""
        now = time.time()
        token = secrets.token_hex(16)
        check_transition(JobState.QUEUED, JobState.RUNNING)
        params = {"token": token, "lease": now + lease_s, "worker": worker_id, "now": now}
        with self._tx() as conn:
            row = conn.execute(_CLAIM_PG if self.pg else _CLAIM_SQLITE, params).one_or_none()
            if row is None:
                return None
            job = Job.from_row(row)
            self._emit(
                conn, job.id, EventType.STARTED, {"attempt": job.attempts, "worker": worker_id}, now
            )
        self._wake_after_commit(notify.EVENTS)
        return Claim(job=job, token=token, attempt=job.attempts)

    def heartbeat(self, job_id: str, token: str, lease_s: float) -> Heartbeat:
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.lease_token == token,
                    jobs.c.state == JobState.RUNNING.value,
                )
                .values(lease_expires_at=now + lease_s)
                .returning(jobs.c.cancel_requested)
            ).first()
        if row is None:
            return Heartbeat(alive=False, cancel_requested=True)
        return Heartbeat(alive=True, cancel_requested=bool(row[0]))

    def cancel_requested(self, job_id: str, token: str) -> bool:
        """True when the attempt should stop: cancelled, deleted, or no longer its attempt."""
        with self.reader.connect() as conn:
            row = conn.execute(
                select(jobs.c.cancel_requested, jobs.c.lease_token).where(jobs.c.id == job_id)
            ).first()
        return row is None or bool(row[0]) or row[1] != token

    def set_progress(self, job_id: str, token: str, fraction: float, message: str | None) -> None:
        now = time.time()
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._tx() as conn:
            result = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.lease_token == token,
                    jobs.c.state == JobState.RUNNING.value,
                )
                .values(progress_fraction=fraction, progress_message=message, updated_at=now)
            )
            if not result.rowcount:
                raise LeaseLost(job_id)
            self._emit(
                conn, job_id, EventType.PROGRESS, {"fraction": fraction, "message": message}, now
            )
        self._wake_after_commit(notify.EVENTS)

    def complete(
        self,
        job_id: str,
        token: str,
        result: Any,
        produced: Sequence[Artifact] = (),
        children: Sequence[NewJob] = (),
    ) -> None:
        """Commit a successful attempt: state, result, artifacts and child jobs in one go."""
        now = time.time()
        check_transition(JobState.RUNNING, JobState.SUCCEEDED)
        with self._tx() as conn:
            # One statement on the hot path: succeed only if this attempt still owns the job
            # and nobody asked to cancel it.
            done = conn.execute(
                _SUCCEED, {"id": job_id, "token": token, "result": _dumps(result), "now": now}
            ).first()
            if done is None:
                cancel = conn.execute(
                    select(jobs.c.cancel_requested).where(
                        jobs.c.id == job_id,
                        jobs.c.lease_token == token,
                        jobs.c.state == JobState.RUNNING.value,
                    )
                ).scalar()
                if not cancel:
                    raise LeaseLost(job_id)
                # Cancelled while finishing: cancellation wins, the outputs are dropped.
                self._end(conn, job_id, token, JobState.CANCELLED, now)
                return
            if produced:
                conn.execute(
                    insert(artifacts),
                    [
                        {
                            "job_id": job_id,
                            "name": a.name,
                            "media_type": a.media_type,
                            "size": a.size,
                            "sha256": a.sha256,
                            "storage_key": a.storage_key,
                            "created_at": now,
                        }
                        for a in produced
                    ],
                )
            for child in children:
                self._insert_child(conn, child, now)
            self._terminal_event(conn, job_id, JobState.SUCCEEDED, {"result": result}, now,
                                 webhook_url=done[0])
        self._wake_after_commit(notify.JOBS, notify.EVENTS)

    def _insert_child(self, conn: Connection, child: NewJob, now: float) -> None:
        conn.execute(
            insert(jobs).values(
                id=child.id,
                state=JobState.QUEUED.value,
                pipeline=child.pipeline,
                options=_dumps(child.options if child.options is not None else {}),
                priority=child.priority,
                max_attempts=child.max_attempts,
                timeout_s=child.timeout_s,
                input_key=child.input_key,
                input_filename=child.input_filename,
                input_size=child.input_size,
                input_sha256=child.input_sha256,
                media_type=child.media_type,
                declared_type=child.declared_type,
                parent_id=child.parent_id,
                webhook_url=child.webhook_url,
                run_after=now,
                created_at=now,
                updated_at=now,
                expires_at=now + self.retention_s,
            )
        )
        self._emit(conn, child.id, EventType.QUEUED, {"pipeline": child.pipeline,
                                                      "parent_id": child.parent_id}, now)
        self._wake(conn, notify.JOBS)

    def fail_attempt(
        self, job_id: str, token: str, error: JobError, policy: RetryPolicy
    ) -> JobState:
        """End an attempt that failed: retry later, or fail for good. Fenced by ``token``."""
        now = time.time()
        with self._tx() as conn:
            state = self._fail_locked(conn, job_id, token, error, policy, now)
        self._wake_after_commit(notify.JOBS, notify.EVENTS)
        return state

    def _fail_locked(
        self,
        conn: Connection,
        job_id: str,
        token: str,
        error: JobError,
        policy: RetryPolicy,
        now: float,
    ) -> JobState:
        row = conn.execute(
            select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.cancel_requested).where(
                jobs.c.id == job_id,
                jobs.c.lease_token == token,
                jobs.c.state == JobState.RUNNING.value,
            )
        ).first()
        if row is None:
            raise LeaseLost(job_id)
        attempts, max_attempts, cancel = row
        if cancel:
            self._end(conn, job_id, token, JobState.CANCELLED, now)
            return JobState.CANCELLED
        error_values = {
            "error_code": error.code,
            "error_message": error.message[:4000],
            "error_retryable": error.retryable,
            "updated_at": now,
            "lease_expires_at": None,
        }
        delay = policy(error, attempts, max_attempts)
        if delay is not None:
            self._move(
                conn,
                job_id,
                [JobState.RUNNING],
                JobState.QUEUED,
                {**error_values, "run_after": now + delay, "lease_token": None},
                token=token,
            )
            self._emit(
                conn,
                job_id,
                EventType.RETRYING,
                {"attempt": attempts, "error": error.to_dict(), "run_after": now + delay},
                now,
            )
            self._wake(conn, notify.JOBS)
            return JobState.QUEUED
        self._move(
            conn,
            job_id,
            [JobState.RUNNING],
            JobState.FAILED,
            {**error_values, "finished_at": now},
            token=token,
        )
        self._terminal_event(conn, job_id, JobState.FAILED, {"error": error.to_dict()}, now)
        return JobState.FAILED

    def _end(self, conn: Connection, job_id: str, token: str, state: JobState, now: float) -> None:
        self._move(
            conn,
            job_id,
            [JobState.RUNNING],
            state,
            {"finished_at": now, "updated_at": now, "lease_expires_at": None},
            token=token,
        )
        self._terminal_event(conn, job_id, state, {}, now)

    def finish_cancelled(self, job_id: str, token: str) -> None:
        now = time.time()
        with self._tx() as conn:
            self._end(conn, job_id, token, JobState.CANCELLED, now)
        self._wake_after_commit(notify.EVENTS)

    def release(self, job_id: str, token: str) -> bool:
        """Give a running job back to the queue without counting the attempt (shutdown)."""
        now = time.time()
        with self._tx() as conn:
            ok = self._move(
                conn,
                job_id,
                [JobState.RUNNING],
                JobState.QUEUED,
                {
                    "attempts": jobs.c.attempts - 1,
                    "lease_token": None,
                    "lease_expires_at": None,
                    "run_after": now,
                    "updated_at": now,
                },
                token=token,
            )
            if ok:
                self._emit(conn, job_id, EventType.RETRYING, {"released": True, "run_after": now},
                           now)
                self._wake(conn, notify.JOBS)
        self._wake_after_commit(notify.JOBS, notify.EVENTS)
        return ok

    def _terminal_event(
        self,
        conn: Connection,
        job_id: str,
        state: JobState,
        data: dict[str, Any],
        now: float,
        *,
        webhook_url: str | None = _UNSET,
    ) -> None:
        etype = TERMINAL_EVENT[state]
        event_id = self._emit(conn, job_id, etype, data, now)
        url = webhook_url
        if url is _UNSET:
            url = conn.execute(select(jobs.c.webhook_url).where(jobs.c.id == job_id)).scalar()
        url = url or self.default_webhook_url
        if url:
            msg_id = f"msg_{uuid.uuid4().hex}"
            body = {
                "type": str(etype),
                "timestamp": now,
                "data": {"job_id": job_id, "event_id": event_id, **data},
            }
            conn.execute(
                insert(outbox).values(
                    msg_id=msg_id,
                    job_id=job_id,
                    event_id=event_id,
                    event_type=str(etype),
                    url=url,
                    body=_dumps(body),
                    state="pending",
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )

    # -- user actions ----------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> JobState:
        """Cancel a queued job now (CANCELLED) or ask a running one to stop (RUNNING)."""
        now = time.time()
        with self._tx() as conn:
            state = conn.execute(
                select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None))
            ).scalar()
            if state is None:
                raise JobNotFound(job_id)
            current = JobState(state)
            if current is JobState.QUEUED:
                self._move(
                    conn,
                    job_id,
                    [JobState.QUEUED],
                    JobState.CANCELLED,
                    {"finished_at": now, "updated_at": now},
                )
                self._terminal_event(conn, job_id, JobState.CANCELLED, {}, now)
                result = JobState.CANCELLED
            elif current is JobState.RUNNING:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(cancel_requested=True, updated_at=now)
                )
                result = JobState.RUNNING
            else:
                raise JobConflict(f"job {job_id} already ended ({current})")
        self._wake_after_commit(notify.EVENTS)
        return result

    def retry_job(self, job_id: str) -> None:
        now = time.time()
        with self._tx() as conn:
            ok = self._move(
                conn,
                job_id,
                [JobState.FAILED, JobState.CANCELLED],
                JobState.QUEUED,
                {
                    "attempts": 0,
                    "run_after": now,
                    "cancel_requested": False,
                    "error_code": None,
                    "error_message": None,
                    "error_retryable": None,
                    "progress_fraction": 0.0,
                    "progress_message": None,
                    "lease_token": None,
                    "result": None,
                    "finished_at": None,
                    "started_at": None,
                    "updated_at": now,
                },
            )
            if not ok:
                state = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
                if state is None:
                    raise JobNotFound(job_id)
                raise JobConflict(f"only failed or cancelled jobs can be retried (this is {state})")
            self._emit(conn, job_id, EventType.QUEUED, {"retry": True}, now)
            self._wake(conn, notify.JOBS)
        self._wake_after_commit(notify.JOBS, notify.EVENTS)

    def delete_job(self, job_id: str) -> list[str]:
        """Tombstone the job (later reads answer 410); return the storage keys to remove."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                select(jobs.c.input_key, jobs.c.state, jobs.c.deleted_at).where(
                    jobs.c.id == job_id
                )
            ).first()
            if row is None:
                raise JobNotFound(job_id)
            keys = [row[0]]
            keys += list(
                conn.execute(select(artifacts.c.storage_key).where(artifacts.c.job_id == job_id))
                .scalars()
            )
            conn.execute(delete(artifacts).where(artifacts.c.job_id == job_id))
            # A running attempt sees cancel_requested and a cleared token: it stops, and
            # none of its writes can land.
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(deleted_at=now, cancel_requested=True, lease_token=None, updated_at=now)
            )
        return keys

    # -- maintenance -----------------------------------------------------------------------

    def reap_expired_leases(self, policy: RetryPolicy, *, now: float | None = None) -> int:
        """Requeue (or fail) running jobs whose lease ran out: their worker is gone."""
        now = time.time() if now is None else now
        with self.reader.connect() as conn:
            stale = conn.execute(
                select(jobs.c.id, jobs.c.lease_token).where(
                    jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now
                )
            ).all()
        reaped = 0
        for job_id, token in stale:
            error = JobError("worker_lost", "the worker stopped renewing its lease", True)
            try:
                with self._tx() as conn:
                    self._fail_locked(conn, job_id, token, error, policy, now)
                reaped += 1
            except LeaseLost:
                continue  # renewed or finished meanwhile
        if reaped:
            self._wake_after_commit(notify.JOBS, notify.EVENTS)
        return reaped

    def expired_jobs(self, now: float, limit: int = 500) -> list[str]:
        with self.reader.connect() as conn:
            return list(
                conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.deleted_at.is_(None), jobs.c.expires_at <= now)
                    .limit(limit)
                ).scalars()
            )

    def purge_history(self, job_id: str) -> None:
        """Drop an expired job's events and finished webhook messages (the tombstone stays)."""
        with self._tx() as conn:
            conn.execute(delete(events).where(events.c.job_id == job_id))
            conn.execute(delete(deliveries).where(deliveries.c.job_id == job_id))
            conn.execute(
                delete(outbox).where(outbox.c.job_id == job_id, outbox.c.state != "pending")
            )

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        found: set[str] = set()
        with self.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                found.update(
                    conn.execute(select(jobs.c.id).where(jobs.c.id.in_(wanted[i : i + 500])))
                    .scalars()
                )
        return found

    # -- webhook outbox --------------------------------------------------------------------

    def due_messages(self, now: float, limit: int = 50) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(outbox)
                .where(outbox.c.state == "pending", outbox.c.next_attempt_at <= now)
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    def next_message_at(self) -> float | None:
        with self.reader.connect() as conn:
            value = conn.execute(
                select(func.min(outbox.c.next_attempt_at)).where(outbox.c.state == "pending")
            ).scalar()
        return float(value) if value is not None else None

    def record_delivery(
        self,
        message_id: int,
        *,
        attempt: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_attempt_at: float | None,
    ) -> None:
        """Log one attempt and move the message on (delivered, failed, disabled or retry)."""
        now = time.time()
        with self._tx() as conn:
            msg = conn.execute(select(outbox).where(outbox.c.id == message_id)).one()._mapping
            conn.execute(
                insert(deliveries).values(
                    outbox_id=message_id,
                    job_id=msg["job_id"],
                    attempt=attempt,
                    at=now,
                    url=msg["url"],
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                    outcome=outcome,
                )
            )
            state = {"delivered": "delivered", "disabled": "disabled", "failed": "failed"}.get(
                outcome, "pending"
            )
            values: dict[str, Any] = {"attempts": attempt, "state": state, "updated_at": now}
            if next_attempt_at is not None:
                values["next_attempt_at"] = next_attempt_at
            conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id, outbox.c.state == "pending")
                .values(**values)
            )
            if outcome == "disabled":
                # 410 Gone: the receiver asked us to stop sending to this endpoint.
                conn.execute(
                    update(outbox)
                    .where(and_(outbox.c.url == msg["url"], outbox.c.state == "pending"))
                    .values(state="disabled", updated_at=now)
                )

    def deliveries_for(self, job_id: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(deliveries, outbox.c.msg_id, outbox.c.event_type)
                .join(outbox, outbox.c.id == deliveries.c.outbox_id)
                .where(deliveries.c.job_id == job_id)
                .order_by(deliveries.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def messages_for(self, job_id: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(outbox).where(outbox.c.job_id == job_id).order_by(outbox.c.id)
            )
            return [dict(r._mapping) for r in rows]


def tombstoned_or_expired(job: Job, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return job.deleted_at is not None or job.expires_at <= now


__all__ = ["Heartbeat", "RetryPolicy", "Store", "tombstoned_or_expired"]
