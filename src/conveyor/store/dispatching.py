"""What the scale-out engine keeps in the database beside the jobs: which broker messages went
out (``jobs.dispatched_at`` / ``dispatches``), the Celery worker nodes' heartbeats, and the one
reconciler's advisory lock. PostgreSQL is the truth; the broker only carries job ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, text, update

from conveyor.store.database import Database
from conveyor.store.tables import jobs, workers

#: The PostgreSQL advisory lock held by the one reconciler (see store/db.py for the others).
PG_RECONCILER_LOCK = 7_401_003


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A job about to be published: what routing and the message need."""

    job_id: str
    n: int
    pipeline: str
    priority: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Running:
    """A running attempt of one of a worker node's pool children."""

    job_id: str
    token: str
    worker_id: str
    started_at: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class WorkerNode:
    id: str
    host: str
    pid: int
    queues: str
    concurrency: int
    running: int
    seen_at: float


class Dispatching:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- messages ------------------------------------------------------------------------

    def prepare(self, job_ids: Sequence[str]) -> list[Dispatch]:
        """What publishing needs for each job still queued (read only: ``dispatched_at`` is
        set by :meth:`mark`, after the publish succeeded, so a publish that fails or never
        happens leaves the job to the reconciler)."""
        if not job_ids:
            return []
        stmt = select(jobs.c.id, jobs.c.dispatches, jobs.c.pipeline, jobs.c.priority,
                      jobs.c.timeout_s).where(
            jobs.c.id.in_(list(job_ids)), jobs.c.state == "queued", jobs.c.deleted_at.is_(None))
        with self.db.reader.connect() as conn:
            rows = conn.execute(stmt).all()
        return [Dispatch(r[0], int(r[1]) + 1, r[2], int(r[3]), float(r[4])) for r in rows]

    def mark(self, job_ids: Sequence[str], published_at: float) -> None:
        """Record that a message for each job went out at ``published_at`` (taken before the
        publish, so it is earlier than any requeue that follows the run it starts)."""
        if not job_ids:
            return
        with self.db.tx() as tx:
            if self.db.pg:
                # Not worth an fsync: a lost mark only makes the reconciler send a duplicate.
                tx.execute(text("SET LOCAL synchronous_commit TO off"))
            tx.execute(
                update(jobs)
                .where(jobs.c.id.in_(list(job_ids)))
                .values(dispatched_at=published_at, dispatches=jobs.c.dispatches + 1)
            )

    def undispatched(self, now: float, grace_s: float, limit: int = 500) -> list[str]:
        """Due jobs with no message since they last became runnable: never published (the
        broker was down, the publisher died), or requeued after their last message (a retry,
        a reaped lease). Jobs merely waiting behind a backlog have a message: not listed."""
        stmt = (
            select(jobs.c.id)
            .where(
                jobs.c.state == "queued",
                jobs.c.deleted_at.is_(None),
                # The grace leaves the publisher of the commit the time to do it first.
                jobs.c.run_after <= now - grace_s,
                (jobs.c.dispatched_at.is_(None)) | (jobs.c.dispatched_at < jobs.c.run_after),
            )
            .order_by(jobs.c.priority.desc(), jobs.c.created_at)
            .limit(limit)
        )
        with self.db.reader.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def sent_before(self, at: float, now: float, limit: int = 5000) -> list[str]:
        """Due queued jobs whose last message went out at or before ``at``: on Redis, a
        message a lost node had received but not yet claimed stays in kombu's ``unacked``
        hash until the visibility timeout, so a lost node's jobs are sent again once."""
        stmt = (
            select(jobs.c.id)
            .where(jobs.c.state == "queued", jobs.c.deleted_at.is_(None),
                   jobs.c.run_after <= now, jobs.c.dispatched_at <= at)
            .order_by(jobs.c.priority.desc(), jobs.c.created_at)
            .limit(limit)
        )
        with self.db.reader.connect() as conn:
            return list(conn.execute(stmt).scalars())

    # -- a node's running attempts -------------------------------------------------------

    def running_under(self, worker_prefix: str) -> list[Running]:
        """The running attempts whose worker id starts with ``worker_prefix`` (one node)."""
        like = worker_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = select(jobs.c.id, jobs.c.lease_token, jobs.c.worker_id, jobs.c.started_at,
                      jobs.c.timeout_s).where(
            jobs.c.state == "running", jobs.c.worker_id.like(like + "%", escape="\\"))
        with self.db.reader.connect() as conn:
            return [Running(r[0], r[1], r[2], float(r[3] or 0), float(r[4]))
                    for r in conn.execute(stmt)]

    # -- worker nodes --------------------------------------------------------------------

    def beat(self, node: WorkerNode, started_at: float) -> None:
        """Upsert a worker node's heartbeat row."""
        values = {"id": node.id, "host": node.host, "pid": node.pid, "queues": node.queues,
                  "concurrency": node.concurrency, "running": node.running,
                  "started_at": started_at, "seen_at": node.seen_at}
        with self.db.tx() as tx:
            done = tx.execute(update(workers).where(workers.c.id == node.id).values(
                {k: v for k, v in values.items() if k != "started_at"}))
            if not done.rowcount:
                tx.execute(workers.insert().values(values))

    def forget(self, node_id: str) -> bool:
        """Remove a node's row (a clean stop, or a lost node handled); False if gone."""
        with self.db.tx() as tx:
            return bool(tx.execute(delete(workers).where(workers.c.id == node_id)).rowcount)

    def live(self, since: float) -> list[WorkerNode]:
        """Nodes seen at or after ``since``."""
        return self._nodes(workers.c.seen_at >= since)

    def lost(self, before: float) -> list[WorkerNode]:
        """Nodes last seen before ``before`` that never said goodbye (a clean stop deletes
        its row)."""
        return self._nodes(workers.c.seen_at < before)

    def _nodes(self, where: Any) -> list[WorkerNode]:
        with self.db.reader.connect() as conn:
            rows = conn.execute(select(workers).where(where).order_by(workers.c.id)).all()
        return [WorkerNode(r.id, r.host, r.pid, r.queues, r.concurrency, r.running, r.seen_at)
                for r in rows]


class LeaderLock:
    """The reconciler's election: a session-level ``pg_try_advisory_lock`` on a connection kept
    open while leading. A dead process (or a lost connection) frees the lock for another."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Connection | None = None

    def hold(self) -> bool:
        """True while this process is the leader (tries to become it when not)."""
        if not self.db.pg:
            return True  # one SQLite file, one machine: no broker mode (refused at start)
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1"))
                # Never left idle in a transaction: that would hold back VACUUM for hours.
                self._conn.commit()
                return True
            conn = self.db.writer.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                               {"k": PG_RECONCILER_LOCK}).scalar()
            conn.commit()
            if got:
                self._conn = conn
                return True
            conn.close()
        except Exception:
            self.release()
            raise
        return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # closing the session frees the lock
            finally:
                conn.close()
