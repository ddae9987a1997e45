"""Outgoing webhooks: Standard Webhooks signatures, SSRF checks, the retry schedule, the sender."""

from conveyor.webhooks.schedule import MAX_ATTEMPTS, SCHEDULE_S, classify, next_delay
from conveyor.webhooks.sender import DeliveryOutcome, send
from conveyor.webhooks.signing import (
    Verifier,
    WebhookVerificationError,
    generate_secret,
    headers,
    sign,
    verify,
)
from conveyor.webhooks.ssrf import AllowList, Target, UnsafeUrl, check_url, default_resolve

__all__ = [
    "MAX_ATTEMPTS",
    "SCHEDULE_S",
    "AllowList",
    "DeliveryOutcome",
    "Target",
    "UnsafeUrl",
    "Verifier",
    "WebhookVerificationError",
    "check_url",
    "classify",
    "default_resolve",
    "generate_secret",
    "headers",
    "next_delay",
    "send",
    "sign",
    "verify",
]
