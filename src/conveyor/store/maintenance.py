"""Housekeeping on the job table: reap expired leases, find expired jobs, forget their history."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import delete, select

from conveyor.errors import LeaseLost
from conveyor.models import ErrorCode, JobError, JobState
from conveyor.store.database import Database
from conveyor.store.tables import deliveries, events, jobs, outbox
from conveyor.store.transitions import RetryDecider, fail_attempt


class Maintenance:
    def __init__(self, db: Database) -> None:
        self.db = db

    def reap_expired_leases(self, decide: RetryDecider, *, now: float | None = None) -> int:
        """Requeue (or fail) running jobs whose lease ran out: their worker is gone.

        Several reapers may run at once (one per ``conveyor serve`` or ``worker``): each job is
        reaped by exactly one of them, the others lose the fenced write and move on.
        """
        now = time.time() if now is None else now
        with self.db.reader.connect() as conn:
            stale = conn.execute(
                select(jobs.c.id, jobs.c.lease_token).where(
                    jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now
                )
            ).all()
        error = JobError(ErrorCode.WORKER_LOST, "the worker stopped renewing its lease", True)
        reaped = 0
        for job_id, token in stale:
            try:
                with self.db.tx() as tx:
                    fail_attempt(tx, job_id, token, error, decide, now,
                                 self.db.default_webhook_url)
                reaped += 1
            except LeaseLost:
                continue  # renewed, finished or reaped by another reaper meanwhile
        return reaped

    def expired_jobs(self, now: float, limit: int = 500) -> list[str]:
        with self.db.reader.connect() as conn:
            return list(
                conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.deleted_at.is_(None), jobs.c.expires_at <= now)
                    .limit(limit)
                ).scalars()
            )

    def purge_history(self, job_id: str) -> None:
        """Drop an expired job's events and finished webhook messages (the tombstone stays)."""
        with self.db.tx() as tx:
            tx.execute(delete(events).where(events.c.job_id == job_id))
            tx.execute(delete(deliveries).where(deliveries.c.job_id == job_id))
            tx.execute(
                delete(outbox).where(outbox.c.job_id == job_id, outbox.c.state != "pending")
            )

    def input_keys(self, ids: Iterable[str]) -> dict[str, str]:
        """The input key of each of the jobs ``ids`` that exists."""
        wanted = list(ids)
        found: dict[str, str] = {}
        with self.db.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                found.update((str(j), str(k)) for j, k in conn.execute(
                    select(jobs.c.id, jobs.c.input_key).where(jobs.c.id.in_(wanted[i : i + 500]))))
        return found

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        found: set[str] = set()
        with self.db.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                found.update(
                    conn.execute(select(jobs.c.id).where(jobs.c.id.in_(wanted[i : i + 500])))
                    .scalars()
                )
        return found
