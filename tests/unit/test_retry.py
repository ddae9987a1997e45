from __future__ import annotations

import random

import pytest

from conveyor.models import JobError
from conveyor.runner.retry import RetryPolicy

LOST = JobError("worker_lost", "gone", True)
CORRUPT = JobError("corrupt_file", "bad", False)


@pytest.mark.parametrize(
    ("error", "attempts", "max_attempts", "retries"),
    [
        (LOST, 1, 3, True),
        (LOST, 2, 3, True),
        (LOST, 3, 3, False),
        (LOST, 5, 3, False),
        (CORRUPT, 1, 3, False),
    ],
)
def test_decide(error: JobError, attempts: int, max_attempts: int, retries: bool) -> None:
    delay = RetryPolicy(2, 300).decide(error, attempts, max_attempts, random.Random(1))
    assert (delay is not None) is retries


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_s=2, cap_s=60)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60, 2 * 2 ** (attempt - 1))
        samples = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jitter spreads retries out
