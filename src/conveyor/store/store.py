"""The store: one object that owns every SQL statement conveyor runs, split by concept.

::

    store.jobs         create, read, list; the user's cancel, retry and delete   (jobs.py)
    store.attempts     claim, heartbeat, progress, complete, fail, release        (attempts.py)
    store.events       the event log read by SSE and replay                        (events.py)
    store.outbox       webhook messages and their delivery attempts                (outbox.py)
    store.maintenance  reaping expired leases, retention                           (maintenance.py)
    store.dispatching  broker messages sent, Celery worker nodes (scale-out)       (dispatching.py)
    store.tenants      tenants, their quotas and webhook secrets                   (tenants.py)
    store.keys         API keys (hashes only)                                      (tenants.py)
    store.reuse        jobs made succeeded from an earlier job's result (reuse)    (reuse.py)
    store.uploads      tus uploads: offsets, and the job made with the last byte  (uploads.py)

State changes are single conditional writes (transitions.py). Each part shares one
:class:`~conveyor.store.database.Database`: the engines, write transactions, and the after-commit
wake-ups of event tailers and of the :mod:`dispatcher <conveyor.dispatch>`.
"""

from __future__ import annotations

import time
from pathlib import Path

from conveyor import notify
from conveyor.dispatch import Dispatcher
from conveyor.store.attempts import Attempts
from conveyor.store.database import Database
from conveyor.store.dispatching import Dispatching
from conveyor.store.events import EventLog
from conveyor.store.jobs import Jobs
from conveyor.store.maintenance import Maintenance
from conveyor.store.outbox import Outbox
from conveyor.store.quotas import TenantQuotas
from conveyor.store.records import Job
from conveyor.store.reuse import Reuse
from conveyor.store.tenants import Keys, Tenants
from conveyor.store.uploads import Uploads


class Store:
    def __init__(
        self,
        url: str,
        *,
        run_dir: Path,
        retention_s: float = 7 * 86400,
        default_webhook_url: str | None = None,
        durable: bool = True,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.db = Database(url, run_dir=run_dir, retention_s=retention_s,
                           default_webhook_url=default_webhook_url, durable=durable,
                           dispatcher=dispatcher)
        self.jobs = Jobs(self.db)
        self.attempts = Attempts(self.db)
        self.events = EventLog(self.db)
        self.outbox = Outbox(self.db)
        self.maintenance = Maintenance(self.db)
        self.dispatching = Dispatching(self.db)
        self.tenants = Tenants(self.db)
        self.keys = Keys(self.db)
        self.reuse = Reuse(self.db, self.jobs)
        self.uploads = Uploads(self.db)
        self.quotas = TenantQuotas(self.db)

    @property
    def pg(self) -> bool:
        return self.db.pg

    def migrate(self) -> None:
        self.db.migrate()

    def ping(self) -> None:
        self.db.ping()

    def free_bytes(self) -> int | None:
        """Free bytes on the database's disk, when it is a local SQLite file."""
        return self.db.free_bytes()

    def listener(self, channel: str) -> notify.Listener:
        return self.db.listener(channel)

    def close(self) -> None:
        self.db.close()


def tombstoned_or_expired(job: Job, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return job.deleted_at is not None or job.expires_at <= now


__all__ = ["Store", "tombstoned_or_expired"]
