"""FastAPI dependencies: ``require(scope)`` on every route; the caller in ``request.state``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from conveyor.auth.authenticator import Authenticator
from conveyor.auth.caller import ADMIN, READ, WRITE, Caller
from conveyor.errors import Forbidden

#: Declares the scheme in the OpenAPI document; the header is read by the Authenticator.
BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cvk_...`")


def authenticator(request: Request) -> Authenticator:
    auth: Any = request.app.state.auth
    return auth  # type: ignore[no-any-return]


@functools.cache
def require(scope: str | None = None) -> Callable[..., Awaitable[Caller]]:
    """A dependency answering the request's :class:`Caller`: 401 without a usable key, 403
    without ``scope`` (None: any valid key). Cached per scope, so FastAPI resolves it once per
    request however many parameters use it."""

    async def dependency(request: Request, _doc: Annotated[Any, Security(BEARER)] = None
                         ) -> Caller:
        caller = await authenticator(request).caller(request.headers.get("authorization"))
        request.state.caller = caller
        if scope is not None and not caller.has(scope):
            raise Forbidden(f"this API key lacks the scope {scope!r}")
        return caller

    dependency.__name__ = f"require_{(scope or 'key').replace(':', '_')}"
    return dependency


#: Route parameter types: ``caller: CanRead`` makes a route need ``jobs:read``.
CanRead = Annotated[Caller, Depends(require(READ))]
CanWrite = Annotated[Caller, Depends(require(WRITE))]
IsAdmin = Annotated[Caller, Depends(require(ADMIN))]
#: Any valid key (or an open server), whatever its scopes.
AnyCaller = Annotated[Caller, Depends(require(None))]
