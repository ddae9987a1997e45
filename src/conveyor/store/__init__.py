"""The job store (SQLAlchemy Core on SQLite or PostgreSQL); see :mod:`conveyor.store.store`."""

from conveyor.store.attempts import Heartbeat
from conveyor.store.records import Artifact, Claim, Delivery, Event, Job, NewJob, OutboxMessage
from conveyor.store.store import Store, tombstoned_or_expired
from conveyor.store.transitions import RetryDecider

__all__ = [
    "Artifact",
    "Claim",
    "Delivery",
    "Event",
    "Heartbeat",
    "Job",
    "NewJob",
    "OutboxMessage",
    "RetryDecider",
    "Store",
    "tombstoned_or_expired",
]
