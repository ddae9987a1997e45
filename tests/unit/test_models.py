from __future__ import annotations

import itertools

import pytest

from conveyor.models import (
    TRANSITIONS,
    IllegalTransition,
    JobState,
    can_transition,
    check_transition,
)

EXPECTED = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
    ("failed", "queued"),
    ("cancelled", "queued"),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, JobState)))
def test_transition_table(current: JobState, target: JobState) -> None:
    allowed = (current.value, target.value) in EXPECTED
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_succeeded_is_final() -> None:
    assert not [t for (s, t) in TRANSITIONS if s is JobState.SUCCEEDED]
    assert JobState.SUCCEEDED.terminal and not JobState.RUNNING.terminal
