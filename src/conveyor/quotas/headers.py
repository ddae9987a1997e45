"""The ``RateLimit-Policy`` and ``RateLimit`` fields of draft-ietf-httpapi-ratelimit-headers-11
(pure).

Both are Structured Field Lists of items named by a quoted policy identifier::

    RateLimit-Policy: "bytes_per_day";q=1000000;w=86400;qu="content-bytes"
    RateLimit: "bytes_per_day";r=0;t=3600
"""

from __future__ import annotations

from conveyor.errors import QuotaLimit


def policy_field(limit: QuotaLimit) -> str:
    """The ``RateLimit-Policy`` item: quota ``q``, window ``w``, quota unit ``qu``."""
    item = f'"{limit.policy}";q={max(0, limit.quota)}'
    if limit.window is not None:
        item += f";w={limit.window}"
    if limit.unit is not None:
        item += f';qu="{limit.unit}"'
    return item


def ratelimit_field(limit: QuotaLimit) -> str:
    """The ``RateLimit`` item: units remaining ``r``, seconds until they are back ``t``."""
    return f'"{limit.policy}";r={max(0, limit.remaining)};t={max(0, limit.reset)}'


def fields(limit: QuotaLimit) -> list[tuple[bytes, bytes]]:
    """Both fields as raw ASGI headers: what a request the rate allowed is answered with."""
    return [(b"ratelimit-policy", policy_field(limit).encode()),
            (b"ratelimit", ratelimit_field(limit).encode())]


def headers(limit: QuotaLimit, *, retry_after: bool = True) -> dict[str, str]:
    """The response headers of a refusal: both fields, and ``Retry-After`` when waiting helps."""
    out = {"RateLimit-Policy": policy_field(limit), "RateLimit": ratelimit_field(limit)}
    if retry_after:
        out["Retry-After"] = str(max(1, limit.reset))
    return out
