"""conveyor's exceptions.

Domain code raises these; only :mod:`conveyor.problems` turns them into HTTP answers (one table,
exception type -> status, the stable ``code`` taken from the exception).

::

    ConveyorError
    ├── ProcessorError          a processor refuses or fails a job (carries a stable ``code``)
    ├── JobNotFound             an id that never existed                         404 not_found
    ├── JobGone                 an id that expired or was deleted                410 gone
    ├── JobConflict             the job is in a state that forbids the request   409 conflict
    │   └── UploadInFlight      an Idempotency-Key whose first upload is still running
    ├── IdempotencyKeyReused    the key was used before for a different request  422
    ├── BadEventId              a Last-Event-ID / ``after`` out of range         400 bad_event_id
    ├── UploadError             an upload is refused (carries a stable ``code``)
    │   ├── MalformedBody       400 malformed_body, too_many_files, too_many_fields,
    │   │                           field_too_large, bad_request
    │   ├── UploadAborted       400 bad_request: the client went away mid-upload
    │   ├── TooLarge            413 too_large
    │   │   └── UploadOverQuota 413 too_large: over the tenant's max_upload_bytes
    │   ├── NoFile              422 no_file: no file part, or no body at all
    │   └── BadParameter        422 bad_parameter: a parameter is unknown or out of range
    │       ├── InvalidOptions  422 bad_options: options are not a JSON object we take
    │       ├── BadWebhookUrl   422 bad_webhook_url
    │       └── UrlForbidden    422 url_forbidden: a URL import the SSRF guard refuses
    ├── TusError                a tus request refused (/v1/uploads; carries a stable ``code``)
    │   ├── UploadNotFound      404 not_found: no such upload
    │   ├── UploadGone          410 gone: the upload expired or was terminated
    │   ├── OffsetMismatch      409 offset_mismatch: Upload-Offset is not the upload's offset
    │   ├── UploadLocked        423 locked: another request is writing this upload
    │   ├── UploadElsewhere     409 upload_elsewhere: this server does not hold the bytes
    │   ├── ChecksumMismatch    460 checksum_mismatch: Upload-Checksum does not match the body
    │   ├── UnsupportedMedia    415 unsupported_media_type
    │   └── TusVersion          412 unsupported_version: a Tus-Resumable other than 1.0.0
    ├── InsufficientStorage     the disk (files or database) is full             507
    │                           insufficient_storage, with Retry-After
    ├── StorageUnavailable      object storage unreachable or refusing   503 storage_unavailable
    ├── Unauthorized            no usable API key (missing, unknown, revoked)   401 unauthorized
    ├── Forbidden               the key lacks the route's scope                   403 forbidden
    ├── TenantNotFound          no tenant (or API key) has that id               404 not_found
    ├── TenantConflict          the tenant exists already, or is deleted         409 conflict
    ├── QuotaExceeded           over a tenant quota (RateLimit headers)  429 quota_exceeded
    │   └── RateLimited         over the tenant's request rate           429 rate_limited
    ├── LeaseLost               a worker's lease token no longer matches (a newer attempt owns it)
    └── ClientError             the Python client got a problem+json answer

The registry's ``UnknownPipeline`` (422 unknown_pipeline) and ``BadOptions`` (422 bad_options)
live in :mod:`conveyor.processors.registry` and are mapped by the same table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar


class ConveyorError(Exception):
    """Base of every conveyor exception."""

    #: The stable error code an API client sees (see ``conveyor.problems.CODES``).
    code: str = "internal_error"


class PluginLoadError(ConveyorError):
    """A ``CONVEYOR_PROCESSORS`` / ``--processors`` entry could not be imported or used.

    Raised at start-up, before serving: the command line prints it as one line and exits 2.
    """


class ProcessorError(ConveyorError):
    """Raised by a processor to fail the job with a stable ``code``.

    ``retryable=False`` (the default) ends the job at once: a corrupt file stays corrupt.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobNotFound(ConveyorError):
    """No job has that id (for this caller)."""

    code = "not_found"


class JobGone(ConveyorError):
    """The job existed but expired or was deleted."""

    code = "gone"


class JobConflict(ConveyorError):
    """The job's state forbids the request (cancel a finished job, retry a running one)."""

    code = "conflict"


class UploadInFlight(JobConflict):
    """The first request with this Idempotency-Key is still uploading (in this process)."""


class IdempotencyKeyReused(ConveyorError):
    """The Idempotency-Key names a job made from a different request (file, pipeline, options)."""

    code = "idempotency_key_reused"


class BadEventId(ConveyorError):
    """An event id (``Last-Event-ID`` or ``after``) outside 0..2**63-1."""

    code = "bad_event_id"


class UploadError(ConveyorError):
    """An upload refused for what the client sent; ``code`` may name the precise reason."""

    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedBody(UploadError):
    """The body cannot be parsed, is cut short, or breaks a framing limit."""

    code = "malformed_body"


class UploadAborted(UploadError):
    """The client disconnected before the body ended."""

    code = "bad_request"


class TooLarge(UploadError):
    """The upload passed the size limit (nothing of it is kept)."""

    code = "too_large"


class UploadOverQuota(TooLarge):
    """The upload passed the tenant's ``max_upload_bytes`` (413: waiting does not help)."""

    def __init__(self, message: str, *, limit: QuotaLimit) -> None:
        super().__init__(message)
        self.limit = limit


class NoFile(UploadError):
    """There is no file: no ``file`` part, or no request body at all."""

    code = "no_file"


class BadParameter(UploadError):
    """A parameter is unknown, not a number, or out of range."""

    code = "bad_parameter"


class InvalidOptions(BadParameter):
    """``options`` is not a JSON object the server will take (syntax, type, depth, size)."""

    code = "bad_options"


class BadWebhookUrl(BadParameter):
    """The webhook URL is not allowed (scheme, or a private address)."""

    code = "bad_webhook_url"


class UrlForbidden(BadParameter):
    """A URL to import names a forbidden scheme, credentials or a non-public address."""

    code = "url_forbidden"


class TusError(ConveyorError):
    """A tus request (``/v1/uploads``) refused; ``code`` names the precise reason."""

    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UploadNotFound(TusError):
    code = "not_found"


class UploadGone(TusError):
    code = "gone"


class OffsetMismatch(TusError):
    code = "offset_mismatch"


class UploadLocked(TusError):
    code = "locked"


class UploadElsewhere(TusError):
    """The upload's staged bytes are not on this server (another one received them)."""

    code = "upload_elsewhere"


class ChecksumMismatch(TusError):
    code = "checksum_mismatch"


class UnsupportedMedia(TusError):
    code = "unsupported_media_type"


class TusVersion(TusError):
    code = "unsupported_version"


class InsufficientStorage(ConveyorError):
    """No room left: the storage's or the database's disk is full (ENOSPC, EDQUOT, SQLite's
    "database or disk is full", PostgreSQL's disk_full), or below ``CONVEYOR_MIN_FREE_BYTES``.

    Nothing of the refused write is kept. It is temporary: a client may try again after
    :attr:`retry_after` seconds, a worker's attempt is retried.
    """

    code = "insufficient_storage"
    #: Seconds a client is told to wait (``Retry-After``) before trying again.
    retry_after: int = 60


class Draining(ConveyorError):
    """The server received SIGTERM and is draining: the client should try another server."""

    code = "draining"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Seconds after which to try again (the ``Retry-After`` header).
        self.retry_after = retry_after


class StorageUnavailable(ConveyorError):
    """The file storage cannot be reached (an S3 outage): retry after ``retry_after`` seconds.

    Raised as :class:`conveyor.storage.StorageUnavailable`, which is also a storage error."""

    code = "storage_unavailable"
    retry_after = 5


class Unauthorized(ConveyorError):
    """No usable API key: missing, malformed, unknown, revoked, or of a deleted tenant."""

    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="conveyor"'}


class Forbidden(ConveyorError):
    """The API key is valid but lacks the scope the route needs."""

    code = "forbidden"


class TenantNotFound(ConveyorError):
    """No tenant (or API key) has that id."""

    code = "not_found"


class TenantConflict(ConveyorError):
    """The tenant exists already, or was deleted (its id is not reused)."""

    code = "conflict"


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """One tenant quota as the RateLimit headers describe it (draft-ietf-httpapi-ratelimit-
    headers-11): the policy's name, its quota ``q``, the units left ``r``, the seconds until
    they are back ``t``; ``window`` and ``unit`` (``request``, ``content-bytes``) are optional.
    """

    policy: str
    quota: int
    remaining: int
    reset: int
    window: int | None = None
    unit: str | None = None


class QuotaExceeded(ConveyorError):
    """The tenant is over one of its quotas: nothing was kept; retry after ``retry_after``."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, limit: QuotaLimit) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = max(1, limit.reset)


class RateLimited(QuotaExceeded):
    """The tenant sent more requests per second than its ``requests_per_s`` allows."""

    code = "rate_limited"


class LeaseLost(ConveyorError):
    """A fenced write found another lease token: this attempt no longer owns the job."""


class ClientError(ConveyorError):
    """A problem+json answer received by :mod:`conveyor.client`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


#: Longest message stored; a processor's own message is cut there too.
MAX_MESSAGE = 300
# An absolute path, or the path part of a file: URL (not the host part of http://host/...).
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()\[\]]+/)+[^\s'\"/:,;()\[\]]*")


def short_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """The first non-empty line of ``text``, server paths cut to their last part, at most
    ``limit`` characters (pure)."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], line)
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"
