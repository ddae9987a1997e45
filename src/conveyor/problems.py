"""RFC 9457 problem+json errors with stable ``code`` values."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"

#: Every code the API answers with, and what it means (the OpenAPI document lists them).
CODES: dict[str, str] = {
    "bad_request": "the request is malformed (parameters, headers or body)",
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
    "not_found": "no such job or artifact",
    "gone": "the job expired or was deleted",
    "conflict": "the job's state does not allow this",
    "range_not_satisfiable": "the requested byte range is outside the file",
    "method_not_allowed": "the method is not allowed on this path",
    "not_ready": "the database, storage or workers are not available",
    "request_timeout": "the request head or body stalled past its time-out",
    "headers_too_large": "the request head is over CONVEYOR_MAX_HEADER_BYTES or has too many "
    "headers",
    "too_many_connections": "too many concurrent connections from one client address",
    "internal_error": "a bug: the server failed unexpectedly",
}

_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
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


def install(app: FastAPI) -> None:
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
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        return problem_response(500, "internal_error", f"{type(exc).__name__}")
