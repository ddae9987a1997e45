"""How a job looks on the wire (API.md), and the pydantic models that document it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from conveyor.store import Job


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def job_view(job: Job) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "state": job.state.value,
        "pipeline": job.pipeline,
        "options": job.options,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_s,
        "input": _input_view(job),
        "progress": {"fraction": job.progress_fraction, "message": job.progress_message},
        "result": job.result,
        "error": job.error.to_dict() if job.error else None,
        "artifacts": [
            {
                "name": a.name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256,
                "url": f"/v1/jobs/{job.id}/artifacts/{a.name}",
            }
            for a in job.artifacts
        ],
        "parent_id": job.parent_id,
        "children": job.children,
        "cancel_requested": job.cancel_requested,
        "webhook_url": job.webhook_url,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "expires_at": iso(job.expires_at),
    }
    return view


def _input_view(job: Job) -> dict[str, Any]:
    # A URL import not fetched yet: size, sha256 and media type are not known (null).
    pending = job.input_pending
    return {
        "filename": job.input_filename,
        "size": None if pending else job.input_size,
        "sha256": None if pending else job.input_sha256,
        "media_type": None if pending else job.media_type,
        "declared_type": job.declared_type,
        "url": f"/v1/jobs/{job.id}/input",
        "source_url": job.input_url,
    }


class InputOut(BaseModel):
    filename: str
    #: Null until a URL import's bytes are fetched (likewise sha256 and media_type).
    size: int | None
    sha256: str | None
    media_type: str | None
    declared_type: str | None
    #: Where the bytes can be downloaded from this server.
    url: str
    #: A URL import's source (null for uploads).
    source_url: str | None = None


class ProgressOut(BaseModel):
    fraction: float
    message: str | None


class ErrorOut(BaseModel):
    code: str
    message: str
    retryable: bool


class ArtifactOut(BaseModel):
    name: str
    media_type: str
    size: int
    sha256: str
    url: str


class JobOut(BaseModel):
    id: str
    state: str
    pipeline: str
    options: Any
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    input: InputOut
    progress: ProgressOut
    result: Any
    error: ErrorOut | None
    artifacts: list[ArtifactOut]
    parent_id: str | None
    children: dict[str, int] | None
    cancel_requested: bool
    webhook_url: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class PipelineOut(BaseModel):
    name: str
    description: str
    steps: list[str]
    accepts: list[str]
    options_schema: dict[str, Any]
    #: The processor version(s) jobs of this pipeline record (``reuse`` matches on it).
    version: str


class DeliveryOut(BaseModel):
    msg_id: str
    event_type: str
    attempt: int
    at: str | None
    url: str
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: str
