"""HEAD for every GET route (RFC 9110 9.3.2): the GET's status and headers, no body.

FastAPI's ``@router.get`` routes do not accept HEAD. This middleware runs such a request as a
GET, forwards the response's start and ends the body at once, then stops the route at its first
body write, so a file is not read and an event stream does not stay open. A route that accepts
HEAD itself is left alone.
"""

from __future__ import annotations

from starlette.routing import Match, Mount, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _HeadDone(Exception):
    """Raised into the route at its first body write: the HEAD answer is complete."""


def _handles(router: Router, scope: Scope, method: str) -> bool:
    probe = {**scope, "method": method}
    return any(
        route.matches(probe)[0] is Match.FULL
        for route in router.routes
        if not isinstance(route, Mount)
    )


class HeadAsGet:
    """ASGI middleware: answer HEAD from the GET route of the same path."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or _handles(self.router, scope, "HEAD")
            or not _handles(self.router, scope, "GET")
        ):
            await self.app(scope, receive, send)
            return
        started = False

        async def head_send(message: Message) -> None:
            nonlocal started
            if message["type"] != "http.response.start" or started:
                raise _HeadDone
            started = True
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app({**scope, "method": "GET"}, receive, head_send)
        except _HeadDone:
            pass
        except BaseExceptionGroup as group:
            # A response streaming from a task group wraps the stop in a group.
            _done, rest = group.split(_HeadDone)
            if rest is not None:
                raise rest from None
