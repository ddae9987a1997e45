"""State changes, each one a single conditional write whose loser learns that it lost.

Every move names the states it may leave (and, for a worker, its lease token); the ``UPDATE``
matches no row when another writer got there first, and then nothing else happens: no event,
no webhook. On PostgreSQL a concurrent writer blocks on the row and re-checks the ``WHERE``
against the winner's version; on SQLite writers are serialised. The terminal event and its
outbox message are written only by the winner, so a job ends exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, select, update

from conveyor.errors import LeaseLost
from conveyor.models import TERMINAL_EVENT, EventType, JobError, JobState, check_transition
from conveyor.store import events as event_log
from conveyor.store.database import Tx
from conveyor.store.outbox import enqueue
from conveyor.store.tables import jobs

#: Decides what follows a failed attempt: seconds until the retry, or None to fail for good.
RetryDecider = Callable[[JobError, int, int], float | None]


def fenced(job_id: str, token: str) -> tuple[ColumnElement[bool], ...]:
    """The filter of every write of an attempt: this job, this attempt's lease, still running."""
    return (jobs.c.id == job_id, jobs.c.lease_token == token,
            jobs.c.state == JobState.RUNNING.value)


def move(
    tx: Tx,
    job_id: str,
    allowed_from: Iterable[JobState],
    target: JobState,
    values: dict[str, Any],
    *where: ColumnElement[bool],
) -> bool:
    """Move the job to ``target`` if it is in one of ``allowed_from`` (and ``where`` holds).
    True if this call made the move."""
    allowed = list(allowed_from)
    for current in allowed:
        check_transition(current, target)
    stmt = update(jobs).where(
        jobs.c.id == job_id, jobs.c.state.in_([s.value for s in allowed]), *where
    )
    return bool(tx.execute(stmt.values(state=target.value, **values)).rowcount)


def announce_end(
    tx: Tx,
    job_id: str,
    state: JobState,
    data: dict[str, Any],
    now: float,
    *,
    webhook_url: str | None,
    default_webhook_url: str | None,
) -> None:
    """The terminal event and its webhook message. Only the writer that won the move calls it."""
    etype = TERMINAL_EVENT[state]
    event_id = event_log.append(tx, job_id, etype, data, now)
    url = webhook_url or default_webhook_url
    if url:
        enqueue(tx, job_id, event_id, etype, url, data, now)


def end_attempt(
    tx: Tx, job_id: str, token: str, state: JobState, data: dict[str, Any], now: float,
    default_webhook_url: str | None, extra: dict[str, Any] | None = None,
) -> bool:
    """End a running attempt in a terminal ``state``. False if it was not this attempt's to end."""
    row = tx.execute(
        update(jobs)
        .where(*fenced(job_id, token))
        .values({"state": state.value, "finished_at": now, "updated_at": now,
                 "lease_expires_at": None, **(extra or {})})
        .returning(jobs.c.webhook_url)
    ).first()
    if row is None:
        return False
    check_transition(JobState.RUNNING, state)
    announce_end(tx, job_id, state, data, now, webhook_url=row[0],
                 default_webhook_url=default_webhook_url)
    return True


def fail_attempt(
    tx: Tx, job_id: str, token: str, error: JobError, decide: RetryDecider, now: float,
    default_webhook_url: str | None,
) -> JobState:
    """End a failed attempt: retry later, fail for good, or (if a cancel came) cancel.

    Raises :class:`LeaseLost` when the attempt no longer owns the job (finished, reaped,
    or retried by someone else): the loser of a race writes nothing.
    """
    while True:
        row = tx.execute(
            select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.cancel_requested)
            .where(*fenced(job_id, token))
        ).first()
        if row is None:
            raise LeaseLost(job_id)
        attempts, max_attempts = int(row.attempts), int(row.max_attempts)
        if row.cancel_requested:
            if end_attempt(tx, job_id, token, JobState.CANCELLED, {}, now, default_webhook_url):
                return JobState.CANCELLED
            raise LeaseLost(job_id)
        error_values = {
            "error_code": error.code,
            "error_message": error.message[:4000],
            "error_retryable": error.retryable,
            "updated_at": now,
            "lease_expires_at": None,
        }
        # The decision was made on this read: the write holds only if no cancel came since.
        unchanged = jobs.c.cancel_requested.is_(False)
        delay = decide(error, attempts, max_attempts)
        if delay is not None:
            run_after = now + delay
            if move(tx, job_id, [JobState.RUNNING], JobState.QUEUED,
                    {**error_values, "run_after": run_after, "lease_token": None},
                    *fenced(job_id, token), unchanged):
                event_log.append(tx, job_id, EventType.RETRYING,
                                 {"attempt": attempts, "error": error.to_dict(),
                                  "run_after": run_after}, now)
                tx.made_runnable(job_id, run_after)
                return JobState.QUEUED
        elif end_attempt(tx, job_id, token, JobState.FAILED, {"error": error.to_dict()}, now,
                         default_webhook_url, extra=error_values):
            return JobState.FAILED
        # Lost the write: a cancel arrived, or the attempt lost its lease. Read again.
