"""One log line per request, and the request id on every response (errors included); the
``RateLimit`` fields on a response to a tenant with a ``requests_per_s`` quota.

The id is the client's ``X-Request-ID`` when valid (see
:func:`conveyor.telemetry.logs.request_id_from`), else a new one. It is set in a context
variable for the request's task, so every log line written while serving it carries it, and the
job a request creates records it (``job.queued`` event data) for the worker's lines.

:class:`ConveyorApp` puts this outside every other middleware, Starlette's error middleware
included, so that even a 500 carries the header and gets its line.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.quotas.headers import fields as ratelimit_fields
from conveyor.telemetry.logs import REQUEST_ID, request_id_from

log = logging.getLogger("conveyor.access")

HEADER = b"x-request-id"
_MAX_PATH = 300


class RequestLog:
    """ASGI middleware: the request id in and out, and the request's log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER), None)
        request_id = request_id_from(incoming)
        encoded = request_id.encode()
        context = REQUEST_ID.set(request_id)
        started = time.monotonic()
        # Shared with the routes (request.state): the caller's key prefix goes on the line.
        state = scope.setdefault("state", {})
        status = 500  # if the app fails before answering (the error middleware answers 500)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                headers.append((HEADER, encoded))
                # Set by the request-rate dependency (api/quotas.py); a refusal already names
                # the quota that refused it.
                limit = state.get("ratelimit")
                if limit is not None and not any(k.lower() == b"ratelimit" for k, _ in headers):
                    headers.extend(ratelimit_fields(limit))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            caller = state.get("caller")
            _log_request(scope, status, time.monotonic() - started, request_id,
                         getattr(caller, "key_prefix", None))
            REQUEST_ID.reset(context)


def _log_request(scope: Scope, status: int, seconds: float, request_id: str,
                 key: str | None = None) -> None:
    """One line; ``key`` is the caller's key prefix (``cvk_...``), never the key itself."""
    # The raw (still percent-encoded) path: no control character of a URL reaches a log line.
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else repr(scope.get("path", ""))
    path = path[:_MAX_PATH]
    method = str(scope.get("method", ""))
    duration_ms = round(seconds * 1000, 3)
    log.info("%s %s %s %.1fms request_id=%s%s", method, path, status, duration_ms, request_id,
             f" key={key}" if key else "",
             extra={"event": "request", "method": method, "path": path, "status": status,
                    "duration_ms": duration_ms, "request_id": request_id, "key": key})


class ConveyorApp(FastAPI):
    """FastAPI with :class:`RequestLog` outermost (outside Starlette's error middleware)."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestLog(super().build_middleware_stack())
