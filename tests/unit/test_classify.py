"""Failure classification, table-tested: which code, retried or not, and a short message."""

from __future__ import annotations

import errno
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from conveyor.errors import LeaseLost, ProcessorError
from conveyor.processors.names import BadArtifactName
from conveyor.processors.registry import BadOptions, UnknownPipeline
from conveyor.runner.classify import MAX_MESSAGE, classify, short_message
from conveyor.storage import StorageError, StorageUnavailable


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", "/srv/conveyor/work/w1-abc/out/x")


@pytest.mark.parametrize(
    ("exc", "code", "retryable", "message"),
    [
        (ProcessorError("corrupt_file", "cannot read image header"), "corrupt_file", False,
         "cannot read image header"),
        (ProcessorError("busy", "try later", retryable=True), "busy", True, "try later"),
        (BadArtifactName("my file.txt"), "bad_artifact_name", False, None),
        (BadOptions("sizes.0: Input should be greater than or equal to 1"), "bad_options",
         False, "sizes.0: Input should be greater than or equal to 1"),
        (UnknownPipeline("no pipeline named 'nope'"), "unknown_pipeline", False,
         "no pipeline named 'nope'"),
        (MemoryError(), "memory_exceeded", False, "the job ran out of memory (cap 1024 MiB)"),
        (_disk_full(), "storage_error", True, "No space left on device (ENOSPC)"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/var/lib/x/y"),
         "storage_error", True, "No such file or directory (ENOENT)"),
        (OperationalError("UPDATE jobs SET x=? WHERE id=?", {"id": "secret"},
                          sqlite3.OperationalError("database is locked")),
         "database_error", True, "database error (OperationalError)"),
        (sqlite3.DatabaseError("file is not a database"), "database_error", True,
         "database error (DatabaseError)"),
        (ZeroDivisionError("division by zero"), "processor_error", True,
         "ZeroDivisionError: division by zero"),
        (KeyError("width"), "processor_error", True, "KeyError: 'width'"),
        (RuntimeError(), "processor_error", True, "RuntimeError"),
    ],
)
def test_classify(exc: Exception, code: str, retryable: bool, message: str | None) -> None:
    error = classify(exc, memory_cap_mb=1024)
    assert (error.code, error.retryable) == (code, retryable)
    if message is not None:
        assert error.message == message
    assert "\n" not in error.message and "/srv/" not in error.message
    assert 0 < len(error.message) <= MAX_MESSAGE


def test_memory_message_without_a_cap() -> None:
    assert classify(MemoryError()).message == "the job ran out of memory"


def test_a_library_dump_becomes_one_short_line_without_server_paths() -> None:
    dump = ("\n  Traceback-ish preamble: cannot open '/home/app/data/work/w3-9f/in.bin' "
            "(via /usr/lib/python3/site-packages/lib/io.py)\n" + "detail line\n" * 50)
    error = classify(ValueError(dump))
    assert error.message == (
        "ValueError: Traceback-ish preamble: cannot open 'in.bin' (via io.py)")
    long = classify(ProcessorError("corrupt_file", "x" * 5000))
    assert long.code == "corrupt_file" and len(long.message) == MAX_MESSAGE


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("plain words", "plain words"),
        ("", ""),
        ("\n\n  second line first  \nthird", "second line first"),
        ("see /tmp/conveyor-work/a/b.txt now", "see b.txt now"),
        ("a directory /srv/data/ here", "a directory data here"),
        ("url http://example.com/a/b stays", "url http://example.com/a/b stays"),
        ("ratio 3/4 and a/b/c stay", "ratio 3/4 and a/b/c stay"),
        ("root / alone", "root / alone"),
    ],
)
def test_short_message(text: str, short: str) -> None:
    assert short_message(text) == short


def test_lease_lost_is_not_classified_as_a_bad_input() -> None:
    # The worker handles LeaseLost before classifying; if it ever got here it would be retried,
    # never a final failure.
    assert classify(LeaseLost("stale")).retryable is True


@pytest.mark.parametrize("exc", [
    StorageUnavailable("object storage unavailable (GenericError)"),
    StorageError("the downloaded input does not match its sha256 (inputs/01AB)"),
])
def test_object_storage_failures_are_retryable_storage_errors(exc: Exception) -> None:
    error = classify(exc)
    assert (error.code, error.retryable) == ("storage_error", True)
    assert error.message == str(exc)
