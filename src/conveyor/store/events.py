"""The event log: every state change of a job, in id order, for SSE, replay and the UI."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, text

from conveyor.models import EventType
from conveyor.store.database import Database, Tx, dumps
from conveyor.store.db import PG_EVENTS_LOCK
from conveyor.store.records import Event
from conveyor.store.tables import events

_INSERT = text(
    "INSERT INTO events (job_id, type, at, data) VALUES (:job_id, :type, :at, :data) RETURNING id"
)
# Read with the job's tenant: the global stream shows each caller its own tenant's events.
_AFTER = text(
    "SELECT events.*, jobs.tenant_id AS tenant_id FROM events "
    "LEFT JOIN jobs ON jobs.id = events.job_id WHERE events.id > :after "
    "ORDER BY events.id LIMIT :limit"
)
_JOB_AFTER = text(
    "SELECT * FROM events WHERE job_id = :job_id AND id > :after ORDER BY id LIMIT :limit"
)


_ORIGIN = text(
    "SELECT data FROM events WHERE job_id = :job_id AND type = :type ORDER BY id LIMIT 1"
)


def append(tx: Tx, job_id: str, etype: EventType, data: Any, now: float,
           request_id: str | None = None) -> int:
    """Write one event in ``tx``; the tailers are woken after the commit. Returns its id.

    A state change is also logged after the commit, with ``request_id`` (default: the request
    being served, if any).
    """
    if tx.pg:
        # Serialise event writers so that ids become visible in increasing order: a tailer
        # reading "id > last" then never skips a row committed late with a smaller id.
        tx.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_EVENTS_LOCK})
    row = tx.execute(
        _INSERT, {"job_id": job_id, "type": str(etype), "at": now, "data": dumps(data)}
    ).one()
    tx.wrote_events = True
    if etype is not EventType.PROGRESS:
        tx.transitions.append((job_id, str(etype), data, request_id))
    return int(row[0])


def origin(tx: Tx, job_id: str) -> str | None:
    """The id of the HTTP request that created the job, when it was recorded."""
    found = tx.execute(_ORIGIN, {"job_id": job_id, "type": str(EventType.QUEUED)}).scalar()
    if not found:
        return None
    value = json.loads(found).get("request_id") if isinstance(found, str) else None
    return value if isinstance(value, str) else None


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def after(self, after_id: int, *, job_id: str | None = None, limit: int = 500) -> list[Event]:
        """Events with an id above ``after_id`` (of one job, or of all), oldest first."""
        params: dict[str, Any] = {"after": after_id, "limit": limit}
        stmt = _AFTER
        if job_id is not None:
            stmt, params["job_id"] = _JOB_AFTER, job_id
        with self.db.reader.connect() as conn:
            return [Event.from_row(r) for r in conn.execute(stmt, params)]

    def last_id(self) -> int:
        with self.db.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())
