"""The watchdog's rules, table-tested: no process, no clock, no sleep."""

from __future__ import annotations

import pytest

from conveyor.runner.watchdog import (
    RSS_INTERVAL_S,
    Observation,
    Watched,
    WatchLimits,
    decide,
    heartbeat_interval,
    reap_interval,
)

MiB = 1024 * 1024
LIMITS = WatchLimits(cancel_grace_s=3.0, rss_cap_bytes=300 * MiB)


@pytest.mark.parametrize(
    ("obs", "limits", "code"),
    [
        # within every limit
        (Observation(now=105.0, started=100.0, timeout_s=10.0), LIMITS, None),
        # the timeout is strict: exactly at it is still allowed
        (Observation(now=110.0, started=100.0, timeout_s=10.0), LIMITS, None),
        (Observation(now=110.01, started=100.0, timeout_s=10.0), LIMITS, "timeout"),
        # a cancel seen, still within the grace period: let the job stop by itself
        (Observation(now=103.0, started=100.0, timeout_s=60.0, cancel_seen=101.0), LIMITS, None),
        (Observation(now=104.5, started=100.0, timeout_s=60.0, cancel_seen=101.0), LIMITS,
         "cancelled"),
        # no grace at all: killed on the first look after the cancel
        (Observation(now=101.1, started=100.0, timeout_s=60.0, cancel_seen=101.0),
         WatchLimits(cancel_grace_s=0.0), "cancelled"),
        # memory: over the cap kills, at the cap does not, no reading decides nothing
        (Observation(now=101.0, started=100.0, timeout_s=60.0, rss=301 * MiB), LIMITS,
         "memory_exceeded"),
        (Observation(now=101.0, started=100.0, timeout_s=60.0, rss=300 * MiB), LIMITS, None),
        (Observation(now=101.0, started=100.0, timeout_s=60.0, rss=None), LIMITS, None),
        # a cap of 0 is off, however large the process
        (Observation(now=101.0, started=100.0, timeout_s=60.0, rss=10_000 * MiB),
         WatchLimits(cancel_grace_s=3.0, rss_cap_bytes=0), None),
        # several at once: timeout first, then cancel, then memory
        (Observation(now=200.0, started=100.0, timeout_s=10.0, cancel_seen=150.0,
                     rss=900 * MiB), LIMITS, "timeout"),
        (Observation(now=200.0, started=100.0, timeout_s=600.0, cancel_seen=150.0,
                     rss=900 * MiB), LIMITS, "cancelled"),
    ],
)
def test_decide(obs: Observation, limits: WatchLimits, code: str | None) -> None:
    kill = decide(obs, limits)
    assert (kill.reason.code if kill else None) == code
    if kill is not None:
        assert kill.reason.retryable is False


def test_kill_messages_say_what_limit_was_passed() -> None:
    timeout = decide(Observation(now=20.0, started=0.0, timeout_s=2.5), LIMITS)
    assert timeout is not None and timeout.reason.message == (
        "the job ran past its timeout of 2.5 s")
    memory = decide(Observation(now=1.0, started=0.0, timeout_s=9.0, rss=612 * MiB), LIMITS)
    assert memory is not None and memory.reason.message == (
        "the worker used 612 MiB, over its cap of 300 MiB")


def test_limits_from_settings_units() -> None:
    assert WatchLimits.of(1.5, 1536) == WatchLimits(1.5, 1536 * MiB)
    assert WatchLimits.of(3.0, 0).rss_cap_bytes == 0


def test_watched_keeps_the_first_cancel_and_samples_rss_at_most_every_interval() -> None:
    run = Watched("job", "token", started=100.0, timeout_s=60.0)
    assert run.rss_due(100.0, LIMITS)  # never read yet
    run.rss_checked = 100.0
    assert not run.rss_due(100.0 + RSS_INTERVAL_S / 2, LIMITS)
    assert run.rss_due(100.0 + RSS_INTERVAL_S, LIMITS)
    assert not run.rss_due(200.0, WatchLimits(cancel_grace_s=3.0))  # no cap: never read
    run.saw_cancel(110.0)
    run.saw_cancel(120.0)  # a later heartbeat does not restart the grace period
    assert run.cancel_seen == 110.0
    assert run.observe(113.5, rss=5) == Observation(113.5, 100.0, 60.0, 110.0, 5)
    kill = decide(run.observe(113.5), LIMITS)
    assert kill is not None and kill.reason.code == "cancelled"


@pytest.mark.parametrize(
    ("lease_s", "beat", "reap"), [(30.0, 7.5, 15.0), (3.0, 0.75, 1.5), (0.1, 0.2, 0.5)]
)
def test_heartbeat_and_reap_cadence(lease_s: float, beat: float, reap: float) -> None:
    assert heartbeat_interval(lease_s) == beat
    assert reap_interval(lease_s) == reap
