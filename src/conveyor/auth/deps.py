"""FastAPI dependencies: ``require(scope)`` on every route; the caller in ``request.state``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from conveyor.auth.authenticator import Authenticator
from conveyor.auth.caller import ADMIN, READ, WRITE, Caller
from conveyor.errors import Forbidden

#: The OpenAPI security scheme of the keyed routes. :mod:`conveyor.api.docs` adds it to the
#: document: declared as a FastAPI ``Security`` parameter it was a dependency of its own,
#: solved on every request for nothing but the document.
BEARER_NAME = "HTTPBearer"
BEARER_SCHEME = {"type": "http", "scheme": "bearer",
                 "description": "An API key: `Authorization: Bearer cvk_...`"}


def authenticator(request: Request) -> Authenticator:
    auth: Any = request.app.state.auth
    return auth  # type: ignore[no-any-return]


def is_keyed(call: object) -> bool:
    """Whether a dependency is one of :func:`require`'s (its route takes the bearer key)."""
    return getattr(call, "keyed", False) is True


@functools.cache
def require(scope: str | None = None) -> Callable[..., Awaitable[Caller]]:
    """A dependency answering the request's :class:`Caller`: 401 without a usable key, 403
    without ``scope`` (None: any valid key). Cached per scope, so FastAPI resolves it once per
    request however many parameters use it. The key is checked once per request: a route's
    ``require`` after the router's (the rate limit's) finds the caller in ``request.state``."""

    async def dependency(request: Request) -> Caller:
        caller: Caller | None = getattr(request.state, "caller", None)
        if caller is None:
            caller = await authenticator(request).caller(request.headers.get("authorization"))
            request.state.caller = caller
        if scope is not None and not caller.has(scope):
            raise Forbidden(f"this API key lacks the scope {scope!r}")
        return caller

    dependency.__name__ = f"require_{(scope or 'key').replace(':', '_')}"
    dependency.keyed = True  # type: ignore[attr-defined]
    return dependency


#: Route parameter types: ``caller: CanRead`` makes a route need ``jobs:read``.
CanRead = Annotated[Caller, Depends(require(READ))]
CanWrite = Annotated[Caller, Depends(require(WRITE))]
IsAdmin = Annotated[Caller, Depends(require(ADMIN))]
#: Any valid key (or an open server), whatever its scopes.
AnyCaller = Annotated[Caller, Depends(require(None))]
