"""Shared directory fsyncs: every caller returns only after an fsync that began after its call."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from conveyor.storage.dirsync import DirSync


def test_concurrent_renames_share_directory_fsyncs(tmp_path: Path) -> None:
    sync = DirSync()
    target = tmp_path / "inputs"
    target.mkdir()
    n = 24
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            tmp = tmp_path / f"{i}.part"
            tmp.write_bytes(b"x")
            start.wait()
            os.replace(tmp, target / str(i))
            sync.sync(target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sync.fsyncs <= n
    assert not sync._dirs  # nobody waits: nothing kept per directory
    assert sorted(os.listdir(target)) == sorted(str(i) for i in range(n))


def test_a_failed_fsync_raises_to_its_caller_and_the_next_call_syncs_again(
    tmp_path: Path,
) -> None:
    sync = DirSync()
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError):
        sync.sync(missing)
    with pytest.raises(FileNotFoundError):  # not "covered" by the failed one
        sync.sync(missing)
    missing.mkdir()
    before = sync.fsyncs
    sync.sync(missing)
    assert sync.fsyncs == before + 1
