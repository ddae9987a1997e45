"""Table tests of the pure parts: the key layout and the Range header."""

from __future__ import annotations

import pytest

from conveyor.api.ranges import ByteRange, RangeNotSatisfiable, parse_range
from conveyor.storage import (
    BadKey,
    artifact_key,
    artifacts_prefix,
    attempt_prefix,
    check_key,
    check_prefix,
    input_job_id,
    input_key,
)

JOB = "01JABCDEF0123456789ABCDEFG"


def test_layout() -> None:
    assert input_key(JOB) == f"inputs/{JOB}"
    assert artifacts_prefix(JOB) == f"artifacts/{JOB}/"
    assert attempt_prefix(JOB, "tok") == f"artifacts/{JOB}/tok/"
    assert artifact_key(JOB, "tok", "thumb.webp") == f"artifacts/{JOB}/tok/thumb.webp"
    assert artifact_key(JOB, "tok", "a.txt").startswith(attempt_prefix(JOB, "tok"))
    assert attempt_prefix(JOB, "tok").startswith(artifacts_prefix(JOB))
    assert input_job_id(input_key(JOB)) == JOB
    for other in (artifact_key(JOB, "t", "a"), "inputs/", f"inputs/{JOB}/x", f"x/{JOB}"):
        assert input_job_id(other) is None, other


@pytest.mark.parametrize("key", ["inputs/a", "a", "a/b/c.txt", "A_b-c.d/e", "_x/0"])
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", [
    "", "/abs", "a/", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/.b", "a b", "a\\b",
    "a\x00b", "é", "a/b/", "a\n", "inputs/x\n",
])
def test_bad_keys(key: str) -> None:
    with pytest.raises(BadKey):
        check_key(key)


@pytest.mark.parametrize("bad", [
    lambda: input_key("../etc"), lambda: artifact_key(JOB, "t", "my file.txt"),
    lambda: artifact_key(JOB, "t", "../../x"), lambda: attempt_prefix(JOB, ".."),
])
def test_layout_refuses_bad_parts(bad: object) -> None:
    with pytest.raises(BadKey):
        bad()  # type: ignore[operator]


@pytest.mark.parametrize("prefix,ok", [
    ("", True), ("inputs/", True), ("artifacts/x", True), ("/", False), ("../", False),
    ("a//", False),
])
def test_prefixes(prefix: str, ok: bool) -> None:
    if ok:
        assert check_prefix(prefix) == prefix
    else:
        with pytest.raises(BadKey):
            check_prefix(prefix)


UNSAT = "416"


@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 10)),
    ("bytes=10-19", 100, (10, 20)),
    ("bytes=90-", 100, (90, 100)),
    ("bytes=90-1000", 100, (90, 100)),  # the end is clamped
    ("bytes=99-99", 100, (99, 100)),
    ("bytes=-10", 100, (90, 100)),      # the last ten
    ("bytes=-1000", 100, (0, 100)),
    ("BYTES = 1 - 2", 100, (1, 3)),
    ("bytes=100-", 100, UNSAT),
    ("bytes=999999-", 100, UNSAT),
    ("bytes=0-", 0, UNSAT),
    ("bytes=-0", 100, UNSAT),
    ("bytes=-5", 0, UNSAT),
    # Malformed or unsupported: ignored, the whole file is sent.
    ("bytes=abc", 100, None),
    ("bytes=5-2", 100, None),
    ("bytes=-", 100, None),
    ("bytes=", 100, None),
    ("bytes=0-1,5-6", 100, None),
    ("items=0-1", 100, None),
    ("0-1", 100, None),
    ("bytes=-1-2", 100, None),
])
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    if expected == UNSAT:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
        return
    got = parse_range(header, size)
    assert (None if got is None else (got.start, got.end)) == expected


def test_content_range() -> None:
    assert ByteRange(10, 20).content_range(100) == "bytes 10-19/100"
    assert ByteRange(10, 20).length == 10
