"""The quota decisions and the RateLimit fields (pure), table-driven."""

from __future__ import annotations

import pytest

from conveyor.errors import QuotaExceeded, QuotaLimit, RateLimited, UploadOverQuota
from conveyor.problems import headers_of, status_of
from conveyor.quotas.headers import headers, policy_field, ratelimit_field
from conveyor.quotas.policy import (
    Quotas,
    Usage,
    check_upload,
    seconds_to_midnight,
    stream_budget,
    utc_day,
)
from conveyor.quotas.rate import RequestRate, rate_item

NOON = 1_764_504_000.0  # 2025-11-30 12:00:00 UTC


@pytest.mark.parametrize(("quotas", "usage", "size", "refused"), [
    (Quotas(), Usage(queued=10**6, bytes_today=10**12), 10**9, None),
    (Quotas(max_queued=3), Usage(queued=2), 1, None),
    (Quotas(max_queued=3), Usage(queued=3), 1, "max_queued"),
    (Quotas(max_upload_bytes=10), Usage(), 10, None),
    (Quotas(max_upload_bytes=10), Usage(), 11, "max_upload_bytes"),
    (Quotas(bytes_per_day=100), Usage(bytes_today=60), 40, None),
    (Quotas(bytes_per_day=100), Usage(bytes_today=60), 41, "bytes_per_day"),
    (Quotas(storage_bytes=100), Usage(storage_bytes=100), 0, None),
    (Quotas(storage_bytes=100), Usage(storage_bytes=100), 1, "storage_bytes"),
    # The size limit first (413: waiting does not help), then a slot, then bytes.
    (Quotas(max_queued=0, max_upload_bytes=1), Usage(), 2, "max_upload_bytes"),
    (Quotas(max_queued=0, bytes_per_day=1), Usage(), 2, "max_queued"),
])
def test_check_upload(quotas: Quotas, usage: Usage, size: int, refused: str | None) -> None:
    if refused is None:
        check_upload(quotas, usage, size, NOON)
        return
    with pytest.raises((QuotaExceeded, UploadOverQuota)) as err:
        check_upload(quotas, usage, size, NOON)
    exc = err.value
    assert isinstance(exc, QuotaExceeded | UploadOverQuota)
    assert exc.limit.policy == refused
    assert status_of(exc) == (413 if refused == "max_upload_bytes" else 429)


def test_bytes_per_day_resets_at_utc_midnight() -> None:
    assert utc_day(NOON) == "2025-11-30"
    assert seconds_to_midnight(NOON) == 43200
    with pytest.raises(QuotaExceeded) as err:
        check_upload(Quotas(bytes_per_day=100), Usage(bytes_today=90), 20, NOON)
    assert err.value.limit == QuotaLimit("bytes_per_day", 100, 10, 43200, window=86400,
                                         unit="content-bytes")
    assert err.value.retry_after == 43200


def test_stream_budget_is_the_tightest_byte_quota() -> None:
    assert stream_budget(Quotas(max_queued=5), Usage(), NOON) is None
    budget = stream_budget(Quotas(max_upload_bytes=500, bytes_per_day=1000,
                                  storage_bytes=2000), Usage(bytes_today=700), NOON)
    assert budget is not None and budget.size == 300
    assert isinstance(budget.refuse(), QuotaExceeded)
    budget = stream_budget(Quotas(max_upload_bytes=100, bytes_per_day=1000), Usage(), NOON)
    assert budget is not None and isinstance(budget.refuse(), UploadOverQuota)


@pytest.mark.parametrize(("limit", "policy", "ratelimit"), [
    (QuotaLimit("max_queued", 5, 0, 5), '"max_queued";q=5', '"max_queued";r=0;t=5'),
    (QuotaLimit("bytes_per_day", 10, -3, 60, window=86400, unit="content-bytes"),
     '"bytes_per_day";q=10;w=86400;qu="content-bytes"', '"bytes_per_day";r=0;t=60'),
])
def test_ratelimit_fields(limit: QuotaLimit, policy: str, ratelimit: str) -> None:
    assert policy_field(limit) == policy
    assert ratelimit_field(limit) == ratelimit
    assert headers(limit) == {"RateLimit-Policy": policy, "RateLimit": ratelimit,
                              "Retry-After": str(max(1, limit.reset))}


def test_a_too_large_upload_has_no_retry_after() -> None:
    exc = UploadOverQuota("big", limit=QuotaLimit("max_upload_bytes", 9, 9, 0))
    found = headers_of(exc)
    assert found is not None and "Retry-After" not in found and "RateLimit" in found


@pytest.mark.parametrize(("per_s", "amount", "window"), [
    (10, 10, 1), (2.5, 2, 1), (1, 1, 1), (0.5, 1, 2), (0.2, 1, 5), (0.3, 1, 4),
])
def test_rate_item(per_s: float, amount: int, window: int) -> None:
    item = rate_item(per_s)
    assert (item.amount, item.get_expiry()) == (amount, window)


def test_request_rate_refuses_past_the_rate_per_tenant() -> None:
    rate = RequestRate("memory://")
    # Each allowed request says what it left: the response's RateLimit fields.
    assert [rate.hit("a", 3).remaining for _ in range(3)] == [2, 1, 0]
    with pytest.raises(RateLimited) as err:
        rate.hit("a", 3)
    assert err.value.code == "rate_limited" and err.value.limit.remaining == 0
    assert 1 <= err.value.retry_after <= 1
    left = rate.hit("b", 3)  # another tenant has its own window
    assert (left.policy, left.quota, left.remaining, left.reset, left.window, left.unit) == (
        "requests_per_s", 3, 2, 1, 1, "request")
