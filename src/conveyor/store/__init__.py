"""The job store (SQLAlchemy Core on SQLite or PostgreSQL)."""

from conveyor.store.records import Artifact, Claim, Event, Job, NewJob
from conveyor.store.store import Heartbeat, RetryPolicy, Store, tombstoned_or_expired

__all__ = [
    "Artifact",
    "Claim",
    "Event",
    "Heartbeat",
    "Job",
    "NewJob",
    "RetryPolicy",
    "Store",
    "tombstoned_or_expired",
]
