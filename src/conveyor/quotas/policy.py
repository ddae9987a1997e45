"""What a tenant may still upload (pure): its quotas, its usage, and the decision.

The same decision runs twice: before the body is read, on the request headers and the usage
read then (a refusal keeps nothing), and again in the transaction that inserts the job, on the
usage read under the tenant's lock (PostgreSQL) or the write lock (SQLite), which is what makes
50 racing uploads stop exactly at the quota.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.errors import QuotaExceeded, QuotaLimit, UploadError, UploadOverQuota

DAY_S = 86400
#: Seconds a client is told to wait for a queue slot or for storage to be freed.
QUEUE_RETRY_S = 5
STORAGE_RETRY_S = 60


@dataclass(frozen=True, slots=True)
class Quotas:
    """A tenant's quotas; None is no limit."""

    max_queued: int | None = None
    max_running: int | None = None
    max_upload_bytes: int | None = None
    bytes_per_day: int | None = None
    storage_bytes: int | None = None
    requests_per_s: float | None = None

    @property
    def limits_uploads(self) -> bool:
        return any(q is not None for q in (self.max_queued, self.max_upload_bytes,
                                           self.bytes_per_day, self.storage_bytes))


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tenant uses now (only the parts its quotas need are counted: others are 0)."""

    queued: int = 0
    running: int = 0
    bytes_today: int = 0
    storage_bytes: int = 0


def utc_day(now: float) -> str:
    """The UTC day ``tenant_usage`` counts bytes under: ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float) -> int:
    """Whole seconds until the next UTC day begins (at least 1)."""
    return max(1, int(DAY_S - now % DAY_S + 0.999))


def _queued_limit(q: Quotas, u: Usage) -> QuotaLimit:
    assert q.max_queued is not None
    return QuotaLimit("max_queued", q.max_queued, q.max_queued - u.queued, QUEUE_RETRY_S)


def _day_limit(q: Quotas, u: Usage, now: float) -> QuotaLimit:
    assert q.bytes_per_day is not None
    return QuotaLimit("bytes_per_day", q.bytes_per_day, q.bytes_per_day - u.bytes_today,
                      seconds_to_midnight(now), window=DAY_S, unit="content-bytes")


def _storage_limit(q: Quotas, u: Usage) -> QuotaLimit:
    assert q.storage_bytes is not None
    return QuotaLimit("storage_bytes", q.storage_bytes, q.storage_bytes - u.storage_bytes,
                      STORAGE_RETRY_S, unit="content-bytes")


def _size_limit(q: Quotas) -> QuotaLimit:
    assert q.max_upload_bytes is not None
    return QuotaLimit("max_upload_bytes", q.max_upload_bytes, q.max_upload_bytes, 0,
                      unit="content-bytes")


def check_upload(q: Quotas, u: Usage, size: int, now: float) -> None:
    """Raise for an upload of ``size`` bytes the quotas refuse (a job slot, then bytes)."""
    if q.max_upload_bytes is not None and size > q.max_upload_bytes:
        raise UploadOverQuota(
            f"the upload is larger than this tenant's max_upload_bytes ({q.max_upload_bytes})",
            limit=_size_limit(q))
    if q.max_queued is not None and u.queued >= q.max_queued:
        raise QuotaExceeded(f"this tenant has {u.queued} queued jobs (max_queued "
                            f"{q.max_queued})", limit=_queued_limit(q, u))
    if q.bytes_per_day is not None and u.bytes_today + size > q.bytes_per_day:
        raise QuotaExceeded(f"{size} more bytes today would pass this tenant's bytes_per_day "
                            f"({q.bytes_per_day}; {u.bytes_today} used)",
                            limit=_day_limit(q, u, now))
    if q.storage_bytes is not None and u.storage_bytes + size > q.storage_bytes:
        raise QuotaExceeded(f"{size} more bytes would pass this tenant's storage_bytes "
                            f"({q.storage_bytes}; {u.storage_bytes} stored)",
                            limit=_storage_limit(q, u))


@dataclass(frozen=True, slots=True)
class Budget:
    """The most bytes a streamed upload may still bring, and the refusal past them."""

    size: int
    refuse: Callable[[], UploadError | QuotaExceeded]


def stream_budget(q: Quotas, u: Usage, now: float) -> Budget | None:
    """The tightest byte quota for a body being read (None: no byte quota applies)."""
    options: list[Budget] = []
    if q.max_upload_bytes is not None:
        options.append(Budget(q.max_upload_bytes, lambda: UploadOverQuota(
            f"the upload is larger than this tenant's max_upload_bytes ({q.max_upload_bytes})",
            limit=_size_limit(q))))
    if q.bytes_per_day is not None:
        options.append(Budget(max(0, q.bytes_per_day - u.bytes_today), lambda: QuotaExceeded(
            f"the upload passed this tenant's bytes_per_day ({q.bytes_per_day})",
            limit=_day_limit(q, u, now))))
    if q.storage_bytes is not None:
        options.append(Budget(max(0, q.storage_bytes - u.storage_bytes), lambda: QuotaExceeded(
            f"the upload passed this tenant's storage_bytes ({q.storage_bytes})",
            limit=_storage_limit(q, u))))
    return min(options, key=lambda b: b.size) if options else None
