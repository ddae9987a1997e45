"""What the routes share: settings, store, storage, registry, the event hub."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from conveyor.api.drain import Drain
from conveyor.api.quotas import QuotaGate
from conveyor.auth import Caller
from conveyor.errors import JobGone, JobNotFound
from conveyor.processors.registry import Registry
from conveyor.quotas.rate import RequestRate
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.store import Job, Store, tombstoned_or_expired
from conveyor.store.group_commit import GroupCommit

if TYPE_CHECKING:
    from conveyor.api.hub import EventHub
    from conveyor.runner.supervisor import Supervisor


@dataclass
class Services:
    settings: Settings
    store: Store
    storage: Storage
    registry: Registry
    hub: EventHub
    supervisor: Supervisor | None = None
    started_at: float = field(default_factory=time.time)
    drain: Drain = field(default_factory=lambda: Drain(0.0))
    #: Idempotency-Keys whose first upload is still being received. Per server process: a
    #: second upload with the same key on another process is not seen here; the store's unique
    #: key then makes it replay or refuse once the first one commits.
    #: Keyed by (tenant, key): Idempotency-Keys are per tenant.
    uploading: set[tuple[str, str]] = field(default_factory=set)
    #: Batches the job rows of concurrent uploads into shared transactions.
    commits: GroupCommit = field(init=False)
    #: Quota cache and request-rate limiter (per process).
    quotas: QuotaGate = field(init=False)

    def __post_init__(self) -> None:
        self.commits = GroupCommit(self.store.jobs)
        self.quotas = QuotaGate(self.store, RequestRate(self.settings.rate_limit_storage))

    def load_job(self, job_id: str, caller: Caller | None = None) -> Job:
        """The job, or :class:`JobNotFound` / :class:`JobGone` (404 / 410 at the edge).

        Another tenant's job is :class:`JobNotFound` with the very message of an id that never
        existed: ids leak nothing (``caller`` None: no check, for internal use).
        """
        job = self.store.jobs.get(job_id)
        if job is None or (caller is not None and not caller.sees(job.tenant_id)):
            raise JobNotFound(f"no job {job_id}")
        if tombstoned_or_expired(job):
            raise JobGone(f"job {job_id} expired or was deleted")
        return job


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain function dependency in a worker thread, one hop per request.
    svc: Any = request.app.state.services
    return svc  # type: ignore[no-any-return]
