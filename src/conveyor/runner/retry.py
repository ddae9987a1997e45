"""The retry policy, as pure functions: exponential backoff with jitter, retryable or not."""

from __future__ import annotations

import random
from dataclasses import dataclass

from conveyor.models import JobError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 2.0
    cap_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based): half fixed, half random ("equal
        jitter"), so retries spread out yet never come back at once."""
        rng = rng or random.Random()
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))

    def decide(
        self, error: JobError, attempts: int, max_attempts: int, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next attempt, or None when the job should fail now."""
        if not error.retryable or attempts >= max_attempts:
            return None
        return self.backoff(attempts, rng)

    def __call__(self, error: JobError, attempts: int, max_attempts: int) -> float | None:
        return self.decide(error, attempts, max_attempts)
