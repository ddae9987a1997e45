"""Quotas at the HTTP edge: whose request it is, its request rate, and the upload checks made
from the headers before the body is read.

The tenant of a request is its :class:`~conveyor.auth.Caller`'s. Quotas are cached per process for
at most :data:`QUOTA_TTL_S`: a raised (or lowered) quota takes effect within that time on every
server, without a restart. The authoritative upload check is the store's reservation in the
job's insert transaction (:func:`conveyor.store.quotas.reserve`); the checks here only refuse
early, so a refused body is never read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from anyio import to_thread
from fastapi import Request

from conveyor.auth import AnyCaller
from conveyor.errors import QuotaLimit
from conveyor.quotas.policy import Budget, Quotas, check_upload, stream_budget
from conveyor.quotas.rate import RequestRate
from conveyor.store import Store

#: Longest time a quota change waits before it applies on a server process.
QUOTA_TTL_S = 1.0
#: Multipart framing around the file: a Content-Length up to this much over a byte quota may
#: still carry a file within it (the streamed count then decides).
MULTIPART_SLACK = 64 * 1024


@dataclass
class QuotaGate:
    """Per-process quota cache and request-rate limiter."""

    store: Store
    rate: RequestRate = field(default_factory=RequestRate)
    _cache: dict[str, tuple[float, Quotas]] = field(default_factory=dict)

    async def quotas(self, tenant: str) -> Quotas:
        now = time.monotonic()
        hit = self._cache.get(tenant)
        if hit is not None and hit[0] > now:
            return hit[1]
        quotas = await to_thread.run_sync(self.store.quotas.quotas, tenant)
        self._cache[tenant] = (now + QUOTA_TTL_S, quotas)
        return quotas

    async def count_request(self, tenant: str) -> QuotaLimit | None:
        """Count one request; the tenant's ``requests_per_s`` as it now stands (None: the
        tenant has no such quota). Past the rate it raises :class:`RateLimited`."""
        per_s = (await self.quotas(tenant)).requests_per_s
        if per_s is None or per_s <= 0:
            return None
        if self.rate.local:
            return self.rate.hit(tenant, per_s)
        # a network round trip: off the event loop
        return await to_thread.run_sync(self.rate.hit, tenant, per_s)

    async def admit_upload(self, tenant: str, length: int | None, multipart: bool,
                           ) -> Budget | None:
        """Refuse an upload its headers already put over a quota (nothing read, nothing
        kept); else the byte budget the body is read against (None: no byte quota)."""
        quotas = await self.quotas(tenant)
        if not quotas.limits_uploads:
            return None
        usage = await to_thread.run_sync(self.store.quotas.usage, tenant, quotas)
        now = time.time()
        size = length or 0
        if multipart:
            size = max(0, size - MULTIPART_SLACK)
        check_upload(quotas, usage, size, now)
        return stream_budget(quotas, usage, now)


async def limit_rate(request: Request, caller: AnyCaller) -> None:
    """Router dependency: count the request against its caller's tenant's ``requests_per_s``
    (after the key is checked: a request without a usable key is 401 and counts nothing).

    The limit as it stands goes on the request's state: :class:`~conveyor.api.requestlog.
    RequestLog` answers with its ``RateLimit-Policy`` and ``RateLimit`` fields, so a client
    sees what it has left before it is refused."""
    # The gate is not a dependency of its own: each is solved on every request.
    gate: QuotaGate = request.app.state.services.quotas
    limit = await gate.count_request(caller.tenant_id)
    if limit is not None:
        request.state.ratelimit = limit
