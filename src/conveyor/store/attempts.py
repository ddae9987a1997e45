"""Attempts: what workers do to a job. Claim it under a fresh lease token, renew the lease,
report progress, and end the attempt. Every write after the claim is fenced by the token
(:func:`~conveyor.store.transitions.fenced`): a write that matches no row means a newer
attempt owns the job, and it is refused with :class:`~conveyor.errors.LeaseLost`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, select, text, update

from conveyor.errors import LeaseLost
from conveyor.models import EventType, JobError, JobState, check_transition
from conveyor.store import events as event_log
from conveyor.store.database import Database, Tx, dumps, transitions_log
from conveyor.store.jobs import insert_job
from conveyor.store.records import Artifact, Claim, Job, NewJob
from conveyor.store.tables import artifacts, jobs
from conveyor.store.transitions import (
    RetryDecider,
    announce_end,
    end_attempt,
    fail_attempt,
    fenced,
    move,
)

# The hot statements, written out once. The claim is a single statement: on SQLite the write
# lock makes it atomic; on PostgreSQL, SKIP LOCKED in a materialised CTE (which runs once,
# where "id IN (SELECT ... LIMIT 1)" may be re-planned as a join that claims several rows).
#
# Fair scheduling: the claim takes the next job of the tenant whose last claim is the oldest
# among tenants with a runnable job and a free ``max_running`` slot (round-robin), then by
# priority and age within that tenant (ix_jobs_tenant). ``tenants.last_claimed_at`` moves in
# the same statement: a CTE on PostgreSQL, the trigger ``trg_jobs_claimed`` on SQLite (0007),
# which cannot write two tables in one statement otherwise. Both searches use the partial
# index ix_jobs_runnable (queued, not deleted; in claim order per tenant), so the claim costs
# the same with 10 or 10,000 queued jobs.
_RUNNABLE = "state = 'queued' AND run_after <= :now AND deleted_at IS NULL"
_HAS_ROOM = """(t.max_running IS NULL OR t.max_running >
    (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.state = 'running'))"""
# "(SELECT ... ORDER BY ... LIMIT 1) IS NOT NULL", not EXISTS: PostgreSQL may turn an EXISTS
# into a hash semi-join over every queued job, or a LIMIT without the index's order into a
# sequential scan; this stays one probe of ix_jobs_runnable per tenant.
_NEXT_TENANT = f"""SELECT t.id FROM tenants t
    WHERE (SELECT 1 FROM jobs q WHERE q.tenant_id = t.id AND q.state = 'queued'
           AND q.deleted_at IS NULL AND q.run_after <= :now
           ORDER BY q.priority DESC, q.created_at, q.id LIMIT 1) IS NOT NULL
    AND {_HAS_ROOM}
    ORDER BY t.last_claimed_at, t.id LIMIT 1"""
_PICK = (f"SELECT id, tenant_id FROM jobs WHERE tenant_id = ({_NEXT_TENANT}) "
         "AND state = 'queued' AND deleted_at IS NULL AND run_after <= :now "
         "ORDER BY priority DESC, created_at, id LIMIT 1")
#: The claim before fair scheduling: the most urgent job whatever its tenant (the benchmark's
#: baseline).
_PICK_GLOBAL = (f"SELECT id FROM jobs WHERE {_RUNNABLE} "
                "ORDER BY priority DESC, created_at, id LIMIT 1")
_CLAIM_SET = """SET state = 'running', attempts = attempts + 1, lease_token = :token,
    lease_expires_at = :lease, worker_id = :worker, started_at = :now, updated_at = :now,
    progress_fraction = 0, progress_message = NULL"""
_CLAIM_NEXT_SQLITE = text(
    f"UPDATE jobs {_CLAIM_SET} WHERE id = (SELECT id FROM ({_PICK})) AND state = 'queued' "
    "RETURNING *"
)
# On PostgreSQL two claims may read the same running count (each statement's snapshot misses
# the other's uncommitted claim): the tenant row that ``bumped`` locks until the commit
# serialises them, and a tenant with max_running is counted again after the statement
# (:meth:`Attempts._over_limit`), which then sees every earlier claim.
_BUMPED = ("bumped AS (UPDATE tenants SET last_claimed_at = :now FROM {src} "
           "WHERE tenants.id = {src}.tenant_id RETURNING tenants.max_running)")
_CLAIM_NEXT_PG = text(
    f"WITH chosen AS MATERIALIZED ({_PICK} FOR UPDATE SKIP LOCKED), "
    f"claimed AS (UPDATE jobs {_CLAIM_SET} FROM chosen WHERE jobs.id = chosen.id "
    "AND jobs.state = 'queued' RETURNING jobs.*), "
    f"{_BUMPED.format(src='claimed')} "
    "SELECT claimed.*, (SELECT max_running FROM bumped) AS tenant_max_running FROM claimed"
)
_GLOBAL_SQLITE = text(
    f"UPDATE jobs {_CLAIM_SET} WHERE id = ({_PICK_GLOBAL}) AND state = 'queued' RETURNING *"
)
_GLOBAL_PG = text(
    f"WITH chosen AS MATERIALIZED ({_PICK_GLOBAL} FOR UPDATE SKIP LOCKED) "
    f"UPDATE jobs {_CLAIM_SET} FROM chosen WHERE jobs.id = chosen.id "
    "AND jobs.state = 'queued' RETURNING jobs.*"
)
# A given job (a Celery task carries its id): exactly that row, or nothing; nothing either while
# its tenant is at max_running.
_ONE_ROOM = f"""NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = jobs.tenant_id
    AND NOT {_HAS_ROOM})"""
_CLAIM_ONE_SQLITE = text(
    f"UPDATE jobs {_CLAIM_SET} WHERE id = :id AND {_RUNNABLE} AND {_ONE_ROOM} RETURNING *"
)
_CLAIM_ONE_PG = text(
    f"WITH claimed AS (UPDATE jobs {_CLAIM_SET} WHERE id = :id AND {_RUNNABLE} AND {_ONE_ROOM} "
    "RETURNING *), "
    f"{_BUMPED.format(src='claimed')} "
    "SELECT claimed.*, (SELECT max_running FROM bumped) AS tenant_max_running FROM claimed"
)
_RUNNING = text("SELECT count(*) FROM jobs WHERE tenant_id = :t AND state = 'running'")
#: A due job the claim above refused (its tenant is at max_running) is due again a moment
#: later, so the reconciler sends it again (its message now predates run_after).
_DEFER = text(f"UPDATE jobs SET run_after = :later, updated_at = :now WHERE id = :id "
              f"AND {_RUNNABLE}")
DEFER_S = 1.0
_SUCCEED = text(
    """UPDATE jobs SET state = 'succeeded', result = :result, progress_fraction = 1,
    finished_at = :now, updated_at = :now, lease_expires_at = NULL, error_code = NULL,
    error_message = NULL, error_retryable = NULL
    WHERE id = :id AND lease_token = :token AND state = 'running' AND NOT cancel_requested
    RETURNING webhook_url, tenant_id"""
)


class _OverLimit(Exception):
    """A PostgreSQL claim that found its tenant over max_running once serialised."""


@dataclass(slots=True)
class Heartbeat:
    alive: bool
    cancel_requested: bool


class Attempts:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- claiming ----------------------------------------------------------------------------

    def claim_next(self, worker_id: str, lease_s: float) -> Claim | None:
        """Claim the next runnable job in one atomic statement: round-robin across tenants
        with room under ``max_running``, then by priority, then age."""
        stmt = _CLAIM_NEXT_PG if self.db.pg else _CLAIM_NEXT_SQLITE
        try:
            return self._claim(stmt, {}, worker_id, lease_s)
        except _OverLimit:
            # Another claim took the tenant's last slot first; the next pick skips it.
            try:
                return self._claim(stmt, {}, worker_id, lease_s)
            except _OverLimit:
                return None

    def claim_next_global(self, worker_id: str, lease_s: float) -> Claim | None:
        """The claim before fair scheduling (priority, then age, whatever the tenant): only
        the engine benchmark uses it, to compare."""
        return self._claim(_GLOBAL_PG if self.db.pg else _GLOBAL_SQLITE, {}, worker_id,
                           lease_s)

    def claim(self, job_id: str, worker_id: str, lease_s: float) -> Claim | None:
        """Claim exactly ``job_id`` if it is runnable now; None for a job that is running,
        finished, cancelled, deleted or not due yet (a duplicate or early message).

        None too while the job's tenant is at ``max_running``: the job stays queued, due
        again :data:`DEFER_S` later, and the reconciler sends its message again then.
        """
        try:
            claimed = self._claim(_CLAIM_ONE_PG if self.db.pg else _CLAIM_ONE_SQLITE,
                                  {"id": job_id}, worker_id, lease_s)
        except _OverLimit:
            claimed = None
        if claimed is None:
            now = time.time()
            with self.db.tx() as tx:
                # Matches only a job still queued and due: then its tenant had no room.
                tx.execute(_DEFER, {"id": job_id, "now": now, "later": now + DEFER_S})
        return claimed

    def _claim(self, stmt: Any, params: dict[str, Any], worker_id: str,
               lease_s: float) -> Claim | None:
        with self.db.tx() as tx:
            return self._claim_in(tx, stmt, params, worker_id, lease_s)

    def _claim_in(self, tx: Tx, stmt: Any, params: dict[str, Any], worker_id: str,
                  lease_s: float) -> Claim | None:
        now = time.time()
        token = secrets.token_hex(16)
        check_transition(JobState.QUEUED, JobState.RUNNING)
        params = {**params, "token": token, "lease": now + lease_s, "worker": worker_id,
                  "now": now}
        row = tx.execute(stmt, params).one_or_none()
        if row is None:
            return None
        if self._over_limit(tx, row):
            raise _OverLimit  # rolls the claim back
        job = Job.from_row(row)
        # Only looked up when transitions are logged: it costs a read per claim.
        request_id = (event_log.origin(tx, job.id)
                      if transitions_log.isEnabledFor(logging.INFO) else None)
        event_log.append(tx, job.id, EventType.STARTED,
                         {"attempt": job.attempts, "worker": worker_id}, now, request_id)
        return Claim(job=job, token=token, attempt=job.attempts, request_id=request_id)

    @staticmethod
    def _over_limit(tx: Tx, row: Any) -> bool:
        """PostgreSQL: whether this claim put its tenant over max_running (a concurrent claim
        of the same tenant committed first). SQLite's write lock already excludes that."""
        limit = row._mapping.get("tenant_max_running") if tx.pg else None
        if limit is None:
            return False
        running = tx.execute(_RUNNING, {"t": row._mapping["tenant_id"]}).scalar_one()
        return bool(running > limit)

    # -- while running -----------------------------------------------------------------------

    def heartbeat(self, job_id: str, token: str, lease_s: float) -> Heartbeat:
        with self.db.tx() as tx:
            row = tx.execute(
                update(jobs)
                .where(*fenced(job_id, token))
                .values(lease_expires_at=time.time() + lease_s)
                .returning(jobs.c.cancel_requested)
            ).first()
        if row is None:
            return Heartbeat(alive=False, cancel_requested=True)
        return Heartbeat(alive=True, cancel_requested=bool(row[0]))

    def cancel_requested(self, job_id: str, token: str) -> bool:
        """True when the attempt should stop: cancelled, deleted, or no longer its attempt."""
        with self.db.reader.connect() as conn:
            row = conn.execute(
                select(jobs.c.cancel_requested, jobs.c.lease_token).where(jobs.c.id == job_id)
            ).first()
        return row is None or bool(row[0]) or row[1] != token

    def set_progress(self, job_id: str, token: str, fraction: float, message: str | None) -> None:
        now = time.time()
        fraction = float(fraction)
        # NaN has no JSON (and no place between 0 and 1): a processor that sends one says 0.
        fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
        with self.db.tx() as tx:
            result = tx.execute(
                update(jobs)
                .where(*fenced(job_id, token))
                .values(progress_fraction=fraction, progress_message=message, updated_at=now)
            )
            if not result.rowcount:
                raise LeaseLost(job_id)
            event_log.append(tx, job_id, EventType.PROGRESS,
                             {"fraction": fraction, "message": message}, now)

    def fill_input(self, job_id: str, token: str, filename: str, size: int, sha256: str,
                   media_type: str, declared_type: str | None) -> None:
        """Record a URL import's fetched input, with a progress event. Fenced by ``token``."""
        now = time.time()
        message = f"fetched {size} bytes"
        with self.db.tx() as tx:
            result = tx.execute(
                update(jobs)
                .where(*fenced(job_id, token))
                .values(input_filename=filename, input_size=size, input_sha256=sha256,
                        media_type=media_type, declared_type=declared_type,
                        progress_message=message, updated_at=now)
            )
            if not result.rowcount:
                raise LeaseLost(job_id)
            event_log.append(tx, job_id, EventType.PROGRESS,
                             {"fraction": 0.0, "message": message}, now)

    # -- ending ------------------------------------------------------------------------------

    def complete(
        self,
        job_id: str,
        token: str,
        result: Any,
        produced: Sequence[Artifact] = (),
        children: Sequence[NewJob] = (),
    ) -> JobState:
        """Commit a successful attempt: state, result, artifacts and child jobs in one go.

        Returns SUCCEEDED, or CANCELLED when a cancel arrived first (the outputs are then
        dropped by the caller). Raises :class:`LeaseLost` when the attempt lost its lease.
        """
        with self.db.tx() as tx:
            return self._complete_in(tx, job_id, token, result, produced, children)

    def complete_and_claim_next(
        self,
        job_id: str,
        token: str,
        result: Any,
        produced: Sequence[Artifact],
        children: Sequence[NewJob],
        worker_id: str,
        lease_s: float,
    ) -> tuple[JobState, Claim | None]:
        """:meth:`complete`, then :meth:`claim_next` in the same transaction: one commit per
        short job instead of two, and the write lock taken once.

        SQLite only (its write lock already makes the claim strict under ``max_running``; on
        PostgreSQL a claim over the limit rolls back, and must not take the completion with
        it): elsewhere the next claim is None and the caller claims as usual. A lost lease
        raises and claims nothing; a cancelled job claims nothing either.
        """
        with self.db.tx() as tx:
            state = self._complete_in(tx, job_id, token, result, produced, children)
            if tx.pg or state is not JobState.SUCCEEDED:
                return state, None
            return state, self._claim_in(tx, _CLAIM_NEXT_SQLITE, {}, worker_id, lease_s)

    def _complete_in(self, tx: Tx, job_id: str, token: str, result: Any,
                     produced: Sequence[Artifact], children: Sequence[NewJob]) -> JobState:
        now = time.time()
        check_transition(JobState.RUNNING, JobState.SUCCEEDED)
        # One statement on the hot path: succeed only if this attempt still owns the job
        # and nobody asked to cancel it.
        done = tx.execute(
            _SUCCEED, {"id": job_id, "token": token, "result": dumps(result), "now": now}
        ).first()
        if done is None:
            # Cancelled while finishing: cancellation wins. Anything else: not ours.
            if self._end(tx, job_id, token, JobState.CANCELLED, now):
                return JobState.CANCELLED
            raise LeaseLost(job_id)
        if produced:
            tx.execute(
                insert(artifacts),
                [{"job_id": job_id, "name": a.name, "media_type": a.media_type,
                  "size": a.size, "sha256": a.sha256, "storage_key": a.storage_key,
                  "created_at": now} for a in produced],
            )
        for child in children:
            # A child belongs to its parent's tenant. No quota refuses it (the parent was
            # accepted and has run); its input counts in the tenant's storage_bytes.
            insert_job(tx, replace(child, tenant_id=done._mapping["tenant_id"]), now,
                       self.db.retention_s)
        announce_end(tx, job_id, JobState.SUCCEEDED, {"result": result}, now,
                     webhook_url=done[0], default_webhook_url=self.db.default_webhook_url)
        return JobState.SUCCEEDED

    def fail(self, job_id: str, token: str, error: JobError, decide: RetryDecider) -> JobState:
        """End an attempt that failed: retry later, or fail for good. Fenced by ``token``."""
        with self.db.tx() as tx:
            return fail_attempt(tx, job_id, token, error, decide, time.time(),
                                self.db.default_webhook_url)

    def finish_cancelled(self, job_id: str, token: str) -> None:
        """End an attempt that stopped because it was cancelled. Fenced by ``token``."""
        with self.db.tx() as tx:
            if not self._end(tx, job_id, token, JobState.CANCELLED, time.time()):
                raise LeaseLost(job_id)

    def _end(self, tx: Tx, job_id: str, token: str, state: JobState, now: float) -> bool:
        return end_attempt(tx, job_id, token, state, {}, now, self.db.default_webhook_url)

    def release(self, job_id: str, token: str) -> bool:
        """Give a running job back to the queue without counting the attempt (shutdown)."""
        now = time.time()
        with self.db.tx() as tx:
            ok = move(
                tx, job_id, [JobState.RUNNING], JobState.QUEUED,
                {"attempts": jobs.c.attempts - 1, "lease_token": None, "lease_expires_at": None,
                 "run_after": now, "updated_at": now},
                *fenced(job_id, token),
            )
            if ok:
                event_log.append(tx, job_id, EventType.RETRYING,
                                 {"released": True, "run_after": now}, now)
                tx.made_runnable(job_id, now)
        return ok
