"""Plain records the store returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from conveyor.models import JobError, JobState


@dataclass(slots=True)
class Artifact:
    job_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    storage_key: str

    @classmethod
    def from_row(cls, row: Any) -> Artifact:
        m = row._mapping
        return cls(m["job_id"], m["name"], m["media_type"], m["size"], m["sha256"],
                   m["storage_key"])


@dataclass(slots=True)
class Job:
    id: str
    state: JobState
    pipeline: str
    options: Any
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    input_key: str
    input_filename: str
    input_size: int
    input_sha256: str
    media_type: str
    declared_type: str | None
    progress_fraction: float
    progress_message: str | None
    result: Any
    error: JobError | None
    parent_id: str | None
    webhook_url: str | None
    idempotency_key: str | None
    run_after: float
    lease_token: str | None
    lease_expires_at: float | None
    worker_id: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    expires_at: float
    deleted_at: float | None
    tenant_id: str = "default"
    #: A URL import's source (None for uploads and child jobs).
    input_url: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    children: dict[str, int] | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        error = None
        if m["error_code"]:
            error = JobError(m["error_code"], m["error_message"] or "", bool(m["error_retryable"]))
        return cls(
            id=m["id"],
            state=JobState(m["state"]),
            pipeline=m["pipeline"],
            options=json.loads(m["options"] or "{}"),
            priority=m["priority"],
            attempts=m["attempts"],
            max_attempts=m["max_attempts"],
            timeout_s=m["timeout_s"],
            input_key=m["input_key"],
            input_filename=m["input_filename"],
            input_size=m["input_size"],
            input_sha256=m["input_sha256"],
            media_type=m["media_type"],
            declared_type=m["declared_type"],
            progress_fraction=m["progress_fraction"],
            progress_message=m["progress_message"],
            result=json.loads(m["result"]) if m["result"] is not None else None,
            error=error,
            parent_id=m["parent_id"],
            webhook_url=m["webhook_url"],
            idempotency_key=m["idempotency_key"],
            run_after=m["run_after"],
            lease_token=m["lease_token"],
            lease_expires_at=m["lease_expires_at"],
            worker_id=m["worker_id"],
            cancel_requested=bool(m["cancel_requested"]),
            created_at=m["created_at"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            updated_at=m["updated_at"],
            expires_at=m["expires_at"],
            deleted_at=m["deleted_at"],
            tenant_id=m["tenant_id"] if "tenant_id" in m else "default",
            input_url=m.get("input_url"),
        )

    @property
    def input_pending(self) -> bool:
        """A URL import whose bytes no worker has fetched yet."""
        return self.input_url is not None and not self.input_sha256


@dataclass(slots=True)
class Event:
    id: int
    job_id: str
    type: str
    at: float
    data: Any
    #: The job's tenant, when read with it (the event streams filter by it).
    tenant_id: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Event:
        m = row._mapping
        return cls(m["id"], m["job_id"], m["type"], m["at"], json.loads(m["data"] or "{}"),
                   m["tenant_id"] if "tenant_id" in m else None)


@dataclass(slots=True)
class NewJob:
    """What ingest hands the store to create a job."""

    id: str
    pipeline: str
    options: Any
    input_key: str
    input_filename: str
    input_size: int
    input_sha256: str
    media_type: str
    declared_type: str | None = None
    priority: int = 0
    max_attempts: int = 3
    timeout_s: float = 600.0
    parent_id: str | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None
    #: The owner; a child job takes its parent's.
    tenant_id: str = "default"
    #: The pipeline's processor version(s) (``Registry.version``), recorded for ``reuse``.
    processor_version: str | None = None
    #: A URL import: the worker fetches the input from here (size and sha256 "" until then).
    input_url: str | None = None


@dataclass(slots=True)
class Claim:
    """A claimed attempt: the job and the lease token that fences every write of this attempt."""

    job: Job
    token: str
    attempt: int
    #: The request that created the job, when known (for log lines).
    request_id: str | None = None


@dataclass(slots=True)
class OutboxMessage:
    """A webhook message waiting for (or done with) delivery."""

    id: int
    msg_id: str
    job_id: str
    event_id: int
    event_type: str
    url: str
    body: str
    state: str
    attempts: int
    next_attempt_at: float
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> OutboxMessage:
        m = row._mapping
        return cls(m["id"], m["msg_id"], m["job_id"], m["event_id"], m["event_type"], m["url"],
                   m["body"], m["state"], m["attempts"], m["next_attempt_at"], m["created_at"])


@dataclass(slots=True)
class Delivery:
    """One attempt to deliver a webhook message."""

    msg_id: str
    event_type: str
    attempt: int
    at: float
    url: str
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: str

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        m = row._mapping
        return cls(m["msg_id"], m["event_type"], m["attempt"], m["at"], m["url"],
                   m["status_code"], m["error"], m["duration_ms"], m["outcome"])
