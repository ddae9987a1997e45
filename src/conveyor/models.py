"""The pure domain: job states, the allowed transitions, error codes and event types.

Nothing here does I/O. The store consults :func:`check_transition` before every state change,
so an illegal move (say ``succeeded -> running``) is refused in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

#: Every legal move. ``running -> queued`` is a retry (with ``run_after``) or a released job;
#: ``failed/cancelled -> queued`` is a retry asked for by a user.
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.QUEUED, JobState.CANCELLED),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.CANCELLED),
        (JobState.RUNNING, JobState.QUEUED),
        (JobState.FAILED, JobState.QUEUED),
        (JobState.CANCELLED, JobState.QUEUED),
    }
)


class IllegalTransition(Exception):
    def __init__(self, current: JobState, target: JobState) -> None:
        super().__init__(f"a job cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: JobState, target: JobState) -> bool:
    return (current, target) in TRANSITIONS


def check_transition(current: JobState, target: JobState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


class EventType(enum.StrEnum):
    QUEUED = "job.queued"
    STARTED = "job.started"
    PROGRESS = "job.progress"
    RETRYING = "job.retrying"
    SUCCEEDED = "job.succeeded"
    FAILED = "job.failed"
    CANCELLED = "job.cancelled"

    @property
    def terminal(self) -> bool:
        return self in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)


TERMINAL_EVENT = {
    JobState.SUCCEEDED: EventType.SUCCEEDED,
    JobState.FAILED: EventType.FAILED,
    JobState.CANCELLED: EventType.CANCELLED,
}


class ErrorCode(enum.StrEnum):
    """Stable codes a failed job carries. Processors may add their own strings."""

    WORKER_LOST = "worker_lost"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    CANCELLED = "cancelled"
    PROCESSOR_ERROR = "processor_error"
    UNKNOWN_PIPELINE = "unknown_pipeline"
    BAD_OPTIONS = "bad_options"
    INPUT_MISSING = "input_missing"
    #: A processor named an artifact against the rule (see ``conveyor.processors.names``).
    BAD_ARTIFACT_NAME = "bad_artifact_name"
    #: The disk or file storage failed under the attempt (retried).
    STORAGE_ERROR = "storage_error"
    #: The database failed under the attempt (retried).
    DATABASE_ERROR = "database_error"
    #: URL import: connection refused or reset, DNS failure, or a time-out (retried).
    URL_UNREACHABLE = "url_unreachable"
    #: URL import: the remote answered 4xx (final) or 5xx (retried).
    URL_STATUS = "url_status"
    #: URL import: the URL, or a redirect, leads to an address the SSRF guard refuses (final).
    URL_FORBIDDEN = "url_forbidden"
    #: The input is larger than ``CONVEYOR_MAX_UPLOAD_BYTES`` (a URL import's, final).
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str
    retryable: bool

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}
