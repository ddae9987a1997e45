"""The ``requests_per_s`` quota, on the ``limits`` library's moving window.

The counters live in a ``limits`` storage (``CONVEYOR_RATE_LIMIT_STORAGE``): ``memory://`` per
process by default (no new service; each server process then allows the full rate), or Redis
(``redis://...``), shared by every server process, as a Celery deployment already has.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from conveyor.errors import QuotaLimit, RateLimited


def rate_item(per_s: float) -> RateLimitItem:
    """``per_s`` requests a second as whole requests in a whole-second window: 2.5/s is
    2 per second; 0.2/s is 1 per 5 seconds."""
    window = 1 if per_s >= 1 else math.ceil(1 / per_s)
    return RateLimitItemPerSecond(max(1, math.floor(per_s * window)), window)


class RequestRate:
    """One limiter per server process, keyed by tenant."""

    def __init__(self, uri: str = "memory://") -> None:
        self.storage = storage_from_string(uri)
        self.local = isinstance(self.storage, MemoryStorage)
        self.limiter = MovingWindowRateLimiter(self.storage)

    def hit(self, tenant: str, per_s: float) -> QuotaLimit:
        """Count one request of ``tenant``; raise :class:`RateLimited` past its rate. Returns
        the limit as this request leaves it, for the response's ``RateLimit`` fields."""
        item = rate_item(per_s)
        allowed = self.limiter.hit(item, "conveyor", tenant)
        stats = self.limiter.get_window_stats(item, "conveyor", tenant)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        limit = QuotaLimit("requests_per_s", item.amount, stats.remaining, reset,
                           window=item.get_expiry(), unit="request")
        if allowed:
            return limit
        raise RateLimited(
            f"more than {item.amount} requests in {item.get_expiry()} s for this tenant "
            f"(requests_per_s {per_s:g})", limit=limit)
