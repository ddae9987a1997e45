"""ASGI middleware for ``/v1/uploads``: the tus headers every request and answer share.

- ``X-HTTP-Method-Override`` (tus: MUST be honoured) replaces the request's method, for
  clients behind proxies that only pass GET and POST;
- every request but OPTIONS must say ``Tus-Resumable: 1.0.0`` (412 otherwise, with
  ``Tus-Version``), checked before the route reads a byte;
- every answer, errors included, carries ``Tus-Resumable: 1.0.0``.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.errors import TusVersion
from conveyor.problems import code_of, problem_response
from conveyor.uploads.protocol import VERSION, check_version

PREFIX = "/v1/uploads"
_METHODS = {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}


class TusHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        override = headers.get("x-http-method-override", "").strip().upper()
        if override in _METHODS:
            scope = {**scope, "method": override}

        async def tus_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Tus-Resumable"] = VERSION
            await send(message)

        if scope["method"] != "OPTIONS":
            try:
                check_version(headers.get("tus-resumable"))
            except TusVersion as exc:
                response = problem_response(412, code_of(exc), str(exc),
                                            headers={"Tus-Version": VERSION})
                await response(scope, receive, tus_send)
                return
        await self.app(scope, receive, tus_send)
