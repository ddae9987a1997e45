"""The Standard Webhooks retry schedule and status classification."""

from __future__ import annotations

import random

import pytest

from conveyor.webhooks.schedule import MAX_ATTEMPTS, SCHEDULE_S, classify, next_delay

HOUR = 3600.0


class FixedRandom:
    """A random source pinned to one value, to reach the jitter's edges exactly."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_the_schedule_is_the_specs() -> None:
    assert SCHEDULE_S == (
        0,
        5,
        5 * 60,
        30 * 60,
        2 * HOUR,
        5 * HOUR,
        10 * HOUR,
        14 * HOUR,
        20 * HOUR,
        24 * HOUR,
    )
    assert MAX_ATTEMPTS == 10


@pytest.mark.parametrize("attempt", range(1, MAX_ATTEMPTS + 1))
def test_without_jitter_each_attempt_waits_the_scheduled_delay(attempt: int) -> None:
    assert next_delay(attempt, FixedRandom(0.5)) == SCHEDULE_S[attempt - 1]
    assert next_delay(attempt, random.Random(1), jitter=0.0) == SCHEDULE_S[attempt - 1]


def test_the_first_attempt_is_immediate_whatever_the_jitter() -> None:
    for value in (0.0, 0.5, 0.999999):
        assert next_delay(1, FixedRandom(value)) == 0.0


@pytest.mark.parametrize("attempt", [2, 3, 10])
def test_jitter_stays_within_ten_percent(attempt: int) -> None:
    base = SCHEDULE_S[attempt - 1]
    assert next_delay(attempt, FixedRandom(0.0)) == pytest.approx(base * 0.9)
    assert next_delay(attempt, FixedRandom(0.999999)) == pytest.approx(base * 1.1, rel=1e-5)
    rng = random.Random(42)
    delays = [next_delay(attempt, rng) for _ in range(500)]
    assert all(d is not None and base * 0.9 <= d <= base * 1.1 for d in delays)
    # It really spreads: many distinct values on both sides of the base.
    assert len(set(delays)) > 400
    assert any(d is not None and d < base for d in delays)
    assert any(d is not None and d > base for d in delays)


def test_delays_never_go_negative_even_with_full_jitter() -> None:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delay = next_delay(attempt, FixedRandom(0.0), jitter=0.999)
        assert delay is not None and delay >= 0.0


def test_there_is_nothing_after_the_last_attempt() -> None:
    assert next_delay(MAX_ATTEMPTS, FixedRandom(0.5)) == 24 * HOUR
    assert next_delay(MAX_ATTEMPTS + 1, FixedRandom(0.5)) is None
    assert next_delay(100, FixedRandom(0.5)) is None


def test_scale_shrinks_the_whole_schedule() -> None:
    scaled = [next_delay(n, FixedRandom(0.5), scale=0.001) for n in range(1, MAX_ATTEMPTS + 1)]
    assert scaled == pytest.approx([s * 0.001 for s in SCHEDULE_S])
    assert next_delay(MAX_ATTEMPTS + 1, FixedRandom(0.5), scale=0.001) is None
    assert next_delay(5, FixedRandom(0.5), scale=0.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "attempt"),
    [({}, 0), ({}, -1), ({"scale": -1.0}, 2), ({"jitter": 1.0}, 2), ({"jitter": -0.1}, 2)],
)
def test_nonsense_arguments_are_refused(kwargs: dict[str, float], attempt: int) -> None:
    with pytest.raises(ValueError):
        next_delay(attempt, FixedRandom(0.5), **kwargs)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify(status) == "delivered"


def test_410_disables_the_endpoint() -> None:
    assert classify(410) == "disable"


@pytest.mark.parametrize(
    "status", [None, 100, 301, 302, 303, 307, 308, 400, 401, 404, 408, 429, 500, 502, 503, 504]
)
def test_everything_else_is_retried(status: int | None) -> None:
    assert classify(status) == "retry"
