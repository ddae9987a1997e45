"""When to retry a webhook delivery, and what an answer means (Standard Webhooks 1.0). Pure."""

from __future__ import annotations

from typing import Final, Literal, Protocol

#: Seconds to wait before each attempt, from the previous one: immediately, 5 s, 5 min, 30 min,
#: 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
SCHEDULE_S: Final[tuple[float, ...]] = (
    0,
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
MAX_ATTEMPTS: Final = len(SCHEDULE_S)
DEFAULT_JITTER: Final = 0.1

Outcome = Literal["delivered", "retry", "disable"]


class Random(Protocol):
    """What :func:`next_delay` needs from a random source (``random.Random`` fits)."""

    def random(self) -> float: ...


def next_delay(
    attempt_number: int,
    rng: Random,
    *,
    scale: float = 1.0,
    jitter: float = DEFAULT_JITTER,
) -> float | None:
    """Seconds to wait before attempt ``attempt_number`` (1-based), or ``None`` past the last.

    Attempt 1 is immediate. Later delays are the schedule's, times ``scale``, spread by up to
    ``jitter`` (a fraction) either way so endpoints that failed together do not retry together.
    """
    if attempt_number < 1:
        raise ValueError(f"attempt_number starts at 1, got {attempt_number}")
    if scale < 0 or not 0 <= jitter < 1:
        raise ValueError("scale must be >= 0 and jitter in [0, 1)")
    if attempt_number > MAX_ATTEMPTS:
        return None
    base = SCHEDULE_S[attempt_number - 1] * scale
    factor = 1.0 + jitter * (2.0 * rng.random() - 1.0)
    return max(0.0, base * factor)


def classify(status_code: int | None) -> Outcome:
    """``delivered`` for 2xx, ``disable`` for 410 Gone, ``retry`` for anything else.

    Redirects are not followed and count as failures; ``None`` (no answer) is a retry.
    """
    if status_code is None:
        return "retry"
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "disable"
    return "retry"
