"""Full disks, pure parts: the 507 mapping, the free-space floor, the database's disk-full
test, the worker's classification and the supervisor's restart back-off."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from conveyor import errors
from conveyor.api.room import short_of_room
from conveyor.models import ErrorCode
from conveyor.problems import headers_of, status_of
from conveyor.runner.classify import classify
from conveyor.runner.restarts import MAX_DELAY_S, Restarts, restart_delay
from conveyor.store.db import disk_full


def test_insufficient_storage_is_507_with_retry_after() -> None:
    exc = errors.InsufficientStorage("the storage disk is full")
    assert status_of(exc) == 507
    assert headers_of(exc) == {"Retry-After": str(exc.retry_after)}
    assert headers_of(errors.TooLarge("x")) is None


@pytest.mark.parametrize(
    ("free", "floor", "length", "refused"),
    [
        ({"storage": 100, "database": 100}, 10, 0, None),
        ({"storage": 100, "database": 100}, 10, 90, None),
        ({"storage": 100, "database": 100}, 10, 91, "storage"),
        ({"storage": 5, "database": 100}, 10, 0, "storage"),
        ({"storage": 100, "database": 5}, 10, 0, "database"),
        ({"storage": 100, "database": 5}, 0, 0, None),
        ({}, 10, 10**12, None),  # an object store and PostgreSQL: nothing to compare
        ({"database": 0}, 0, 10**12, None),  # the upload's bytes go to the storage only
    ],
)
def test_short_of_room(free: dict[str, int], floor: int, length: int,
                       refused: str | None) -> None:
    why = short_of_room(free, floor, length)
    if refused is None:
        assert why is None
    else:
        assert why is not None and f"the {refused} disk" in why
        assert "CONVEYOR_MIN_FREE_BYTES" in why


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("could not extend file")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("orig", "full"),
    [
        (_sqlite_error("database or disk is full", 13), True),
        (_sqlite_error("database is locked", 5), False),
        (_PgError("53100"), True),
        (_PgError("57P01"), False),
    ],
)
def test_disk_full_is_recognised_in_database_errors(orig: Exception, full: bool) -> None:
    assert disk_full(OperationalError("INSERT ...", {}, orig)) is full


def test_a_full_disk_in_a_worker_is_a_retried_storage_error() -> None:
    error = classify(errors.InsufficientStorage("the database's disk is full"))
    assert (error.code, error.retryable) == (ErrorCode.STORAGE_ERROR, True)
    assert error.message == "the database's disk is full"


def test_restart_delay_doubles_after_the_first_crash_up_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == MAX_DELAY_S and delays == sorted(delays)


def test_restarts_back_off_per_slot_and_a_stable_worker_ends_the_streak() -> None:
    r = Restarts()
    assert r.exited(0, 100.0, crashed=True, stable=False, reason="disk full") == 0.0
    assert r.exited(0, 100.0, crashed=True, stable=False, reason="disk full") == 1.0
    assert r.exited(1, 100.0, crashed=True, stable=False, reason="x") == 0.0  # its own streak
    assert r.due(100.5) == [] and "worker 0 died 2 times in a row (disk full)" in (
        r.describe(100.5) or "")
    assert r.due(101.0) == [0] and r.describe(101.0) is None
    assert r.exited(0, 102.0, crashed=True, stable=False, reason="disk full") == 2.0
    # A worker that finished a job (or lived long) starts a new streak; a clean exit is no crash.
    assert r.exited(0, 200.0, crashed=True, stable=True, reason="disk full") == 0.0
    assert r.exited(0, 201.0, crashed=False, stable=False, reason="exit code 0") == 0.0
    assert r.exited(0, 202.0, crashed=True, stable=False, reason="x") == 0.0
