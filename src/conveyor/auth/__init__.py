"""Who may call: API keys, tenants' callers, scopes, and the FastAPI dependency on every route.

::

    keys.py           key format, generation, SHA-256 hash, constant-time comparison
    caller.py         Caller (tenant, scopes, key), the scope names
    authenticator.py  the modes (auto, keys, none) and the prefix lookup cache (< 1 s stale)
    deps.py           require(scope): 401 / 403, request.state.caller
"""

from conveyor.auth.authenticator import Authenticator
from conveyor.auth.caller import ADMIN, READ, SCOPES, WRITE, Caller, parse_scopes
from conveyor.auth.deps import AnyCaller, CanRead, CanWrite, IsAdmin, require

__all__ = [
           "ADMIN",
           "READ",
           "SCOPES",
           "WRITE",
           "AnyCaller",
           "Authenticator",
           "Caller",
           "CanRead",
           "CanWrite",
           "IsAdmin",
           "parse_scopes",
           "require",
]
