"""RFC 9457 problem+json errors with stable ``code`` values.

This is the only place where a domain error becomes an HTTP answer: :data:`STATUS` maps each
exception type (:mod:`conveyor.errors`, the registry's) to a status, and the code comes from the
exception. Routes raise domain errors and never catch them to re-raise a :class:`Problem`;
:class:`Problem` is for what only the HTTP layer knows (readiness, downloads, headers).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from conveyor import errors
from conveyor.processors.registry import BadOptions, UnknownPipeline
from conveyor.quotas import headers as ratelimit

PROBLEM = "application/problem+json"

#: Every code the API answers with, and what it means (the OpenAPI document lists them).
CODES: dict[str, str] = {
    "bad_request": "the request is malformed (parameters, headers or body)",
    "bad_event_id": "Last-Event-ID or `after` is not an event id (0 to 2**63-1)",
    "malformed_body": "the multipart body could not be parsed (or was cut short)",
    "no_file": "the multipart body has no file part named `file`",
    "too_many_files": "the multipart body has more than one file part",
    "too_many_fields": "the multipart body has too many parts",
    "field_too_large": "a text field is larger than allowed",
    "too_large": "the upload is larger than CONVEYOR_MAX_UPLOAD_BYTES",
    "bad_options": "the options are not a JSON object valid for the pipeline",
    "unknown_pipeline": "no pipeline has that name",
    "bad_parameter": "a parameter (priority, max_attempts, timeout_s, ...) is out of range",
    "bad_webhook_url": "the webhook URL is not allowed (scheme, or a private address)",
    "unauthorized": "no usable API key: send `Authorization: Bearer <key>` (missing, "
    "malformed, unknown or revoked key)",
    "forbidden": "the API key lacks the scope this route needs",
    "url_forbidden": "the URL to import is not allowed (scheme, credentials, or a private "
    "address; see CONVEYOR_URL_IMPORT_ALLOW_PRIVATE)",
    "not_found": "no such job, artifact, upload, tenant or key",
    "gone": "the job (or tus upload) expired or was deleted",
    "conflict": "the job's state does not allow this (or the first upload with this "
    "Idempotency-Key is still running)",
    "idempotency_key_reused": "the Idempotency-Key was used for a different request "
    "(file, pipeline or options)",
    "range_not_satisfiable": "the requested byte range is outside the file",
    "method_not_allowed": "the method is not allowed on this path",
    "storage_unavailable": "the file storage (S3) is unreachable: nothing was kept; retry "
    "after Retry-After seconds",
    "not_ready": "the database, storage or workers are not available",
    "draining": "the server is shutting down (SIGTERM): try again, on another server",
    "request_timeout": "the request head or body stalled past its time-out",
    "headers_too_large": "the request head is over CONVEYOR_MAX_HEADER_BYTES or has too many "
    "headers",
    "too_many_connections": "too many concurrent connections from one client address",
    "insufficient_storage": "the server's disk (files or database) is full or below "
    "CONVEYOR_MIN_FREE_BYTES; nothing was kept: try again after Retry-After seconds",
    "quota_exceeded": "the tenant is over a quota (max_queued, bytes_per_day, storage_bytes): "
    "nothing was kept; the RateLimit headers say which, retry after Retry-After seconds",
    "rate_limited": "the tenant sent more requests per second than its requests_per_s quota",
    "offset_mismatch": "tus: Upload-Offset is not the upload's current offset (HEAD it)",
    "checksum_mismatch": "tus: Upload-Checksum does not match the PATCH body; nothing was kept",
    "bad_checksum_algorithm": "tus: the Upload-Checksum algorithm is not sha256, sha1 or md5",
    "bad_metadata": "tus: Upload-Metadata is not `key base64value` pairs (or a value is not "
    "UTF-8)",
    "locked": "tus: another request is writing this upload now; retry once it ends",
    "upload_elsewhere": "tus on local storage: the bytes received so far are on another "
    "conveyor server; send this upload's requests to the server that received them (or share "
    "the data dir, or use S3 storage)",
    "unsupported_media_type": "the Content-Type is not the one this route takes "
    "(tus PATCH: application/offset+octet-stream)",
    "unsupported_version": "tus: Tus-Resumable is not a version this server speaks (1.0.0)",
    "internal_error": "a bug: the server failed unexpectedly",
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    415: "Unsupported Media Type",
    423: "Locked",
    460: "Checksum Mismatch",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


#: Domain error -> HTTP status. A subclass not listed takes its nearest listed base's status;
#: a ConveyorError with none (LeaseLost reaching a route) is a bug: 500.
STATUS: dict[type[Exception], int] = {
    errors.MalformedBody: 400,
    errors.UploadAborted: 400,
    errors.BadEventId: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.JobNotFound: 404,
    errors.TenantNotFound: 404,
    errors.TenantConflict: 409,
    errors.JobConflict: 409,
    errors.JobGone: 410,
    errors.TooLarge: 413,
    errors.NoFile: 422,
    errors.BadParameter: 422,
    errors.IdempotencyKeyReused: 422,
    errors.Draining: 503,
    errors.TusError: 400,
    errors.UploadNotFound: 404,
    errors.UploadGone: 410,
    errors.OffsetMismatch: 409,
    errors.UploadLocked: 423,
    errors.UploadElsewhere: 409,
    errors.ChecksumMismatch: 460,
    errors.UnsupportedMedia: 415,
    errors.TusVersion: 412,
    UnknownPipeline: 422,
    BadOptions: 422,
    errors.InsufficientStorage: 507,
    errors.StorageUnavailable: 503,
    errors.QuotaExceeded: 429,
}

#: Codes of the mapped exceptions that do not carry one (the registry's are plain exceptions).
_DEFAULT_CODES: dict[type[Exception], str] = {
    UnknownPipeline: "unknown_pipeline",
    BadOptions: "bad_options",
}


def status_of(exc: BaseException) -> int:
    """The HTTP status for a domain error (500 for anything :data:`STATUS` does not know)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def headers_of(exc: BaseException) -> dict[str, str] | None:
    """Response headers a domain error asks for: ``Retry-After`` for one that is temporary
    (a full disk, a draining server), ``WWW-Authenticate`` for a 401; the RateLimit fields for
    a quota (no ``Retry-After`` for a too-large upload: waiting does not help)."""
    limit = getattr(exc, "limit", None)
    if isinstance(limit, errors.QuotaLimit):
        return ratelimit.headers(limit, retry_after=isinstance(exc, errors.QuotaExceeded))
    found: dict[str, str] = dict(getattr(exc, "headers", None) or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        found["Retry-After"] = str(retry_after)
    return found or None


def code_of(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in _DEFAULT_CODES:
            return _DEFAULT_CODES[cls]
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code in CODES else "internal_error"


class Problem(Exception):
    """An HTTP answer decided by the HTTP layer itself (domain code raises conveyor.errors)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        assert code in CODES, code
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://conveyor.dev/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def problem_schema() -> dict[str, Any]:
    return {
        "description": "RFC 9457 problem details",
        "content": {
            PROBLEM: {
                "schema": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string", "enum": sorted(CODES)},
                    },
                }
            }
        },
    }


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette's 405 names the first route's).

    Each route is asked whether it fully matches the path with each method, so routers
    included with a prefix count too, whatever the framework's internal route types are.
    """
    found: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):
            continue  # static files answer every method themselves
        for method in _METHOD_ORDER:
            match, _child = route.matches({**request.scope, "method": method})
            if match is Match.FULL:
                found.add(method)
    if "GET" in found:
        found.add("HEAD")  # conveyor.api.head answers HEAD for every GET route
    if found:
        found.add("OPTIONS")
    return [m for m in _METHOD_ORDER if m in found]


def install(app: FastAPI) -> None:
    """Answer every error as problem+json: domain errors, validation, 404/405, bugs."""

    async def _domain(_request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            return await _bug(_request, exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, BadOptions):
            extra["errors"] = exc.errors
        return problem_response(status, code_of(exc), str(exc) or code_of(exc),
                                headers=headers_of(exc), **extra)

    handled: list[type[Exception]] = [errors.ConveyorError, *STATUS]
    for exc_type in handled:
        app.add_exception_handler(exc_type, _domain)

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(422, "bad_parameter", detail or "invalid request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            allow = ", ".join(allowed_methods(request))
            headers["Allow"] = allow
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
            detail = f"{request.method} is not allowed here (allowed: {allow})"
            return problem_response(405, code, detail, headers=headers)
        return problem_response(exc.status_code, code, str(exc.detail), headers=headers or None)

    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        return problem_response(500, "internal_error", f"{type(exc).__name__}")

    app.add_exception_handler(Exception, _bug)
