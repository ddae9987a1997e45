"""The storage protocol on both backends: a real directory, and moto's S3 server.

Each test runs on ``local`` and ``s3`` (the ``backend`` fixture); :class:`Backend` tells what
a backend holds, finished objects and unfinished writes (temp files or multipart uploads).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from conveyor.settings import Settings
from conveyor.storage import (
    BadKey,
    BlockingStorage,
    LocalStorage,
    NotFound,
    PresignUnsupported,
    Storage,
    StorageError,
    artifact_key,
    artifacts_prefix,
    attempt_prefix,
    from_url,
    input_key,
)
from conveyor.storage.local import WRITE_BUFFER
from conveyor.storage.s3 import S3Storage
from tests import objects
from tests.conftest import BACKENDS

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def _put(storage: Storage, key: str, data: bytes) -> None:
    writer = await storage.open_writer(key)
    for i in range(0, len(data), 65536):
        await writer.write(data[i : i + 65536])
    await writer.complete()


async def _read(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await storage.read(key, start, end)])


class Backend:
    def __init__(self, storage: Storage, moto: objects.Moto | None = None,
                 prefix: str = "") -> None:
        self.storage, self.moto, self.prefix = storage, moto, prefix

    def objects(self) -> list[str]:
        """Every key holding bytes: finished objects and unfinished writes."""
        if self.moto is None:
            assert isinstance(self.storage, LocalStorage)
            return _files(self.storage.root)
        return sorted([*objects.s3_keys(self.moto, self.prefix),
                       *objects.s3_uploads(self.moto, self.prefix)])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "local":
        return Backend(LocalStorage(tmp_path / "files"))
    moto: objects.Moto = request.getfixturevalue("moto")
    env = moto.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    prefix = objects.bucket_prefix(env)
    assert prefix
    storage = S3Storage(env["CONVEYOR_STORAGE_URL"], part_bytes=objects.PART,
                        max_upload_bytes=100 * 1024**2)
    assert storage.part_size == objects.PART
    return Backend(storage, moto, prefix)


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


def test_nothing_is_visible_before_complete_and_then_all_of_it(backend: Backend) -> None:
    # several buffered writes and a tail; on S3 several parts of a multipart upload
    data = os.urandom(max(3 * WRITE_BUFFER, 3 * objects.PART) + 123)
    key = input_key("J1")
    local = backend.storage

    async def go() -> None:
        writer = await local.open_writer(key)
        for i in range(0, len(data), 100_000):
            await writer.write(data[i : i + 100_000])
            assert await local.stat(key) is None
            assert await local.keys("inputs/") == []
        await writer.complete()
        info = await local.stat(key)
        assert info is not None and info.size == len(data)
        assert await _read(local, key) == data
        with pytest.raises(StorageError):
            await writer.write(b"more")
        await writer.abort()  # a no-op after complete
        assert await _read(local, key) == data

    run(go)
    assert backend.objects() == [key]  # the temp file was renamed, not copied; no parts left


def test_small_object_is_one_put(backend: Backend) -> None:
    async def go() -> None:
        await _put(backend.storage, input_key("S"), b"small")
        assert await _read(backend.storage, input_key("S")) == b"small"
        await _put(backend.storage, input_key("E"), b"")
        assert await _read(backend.storage, input_key("E")) == b""
        assert (await backend.storage.stat(input_key("E"))).size == 0  # type: ignore[union-attr]

    run(go)
    assert backend.objects() == [input_key("E"), input_key("S")]


def test_abort_leaves_nothing(backend: Backend) -> None:
    local = backend.storage

    async def go() -> None:
        writer = await local.open_writer(input_key("J2"))
        await writer.write(os.urandom(2 * max(WRITE_BUFFER, objects.PART)))
        await asyncio.sleep(0.3)
        assert backend.objects() != []  # the bytes really went to disk (or into parts)
        await writer.abort()
        await writer.abort()

    run(go)
    assert backend.objects() == []


def test_ranged_reads(backend: Backend) -> None:
    local = backend.storage
    data = os.urandom(700_000)  # more than one read chunk
    key = input_key("J3")

    async def go() -> None:
        await _put(local, key, data)
        for start, end in [(0, None), (0, 1), (10, 20), (699_999, None), (5, 10**9),
                           (300_000, 600_001), (700_000, None)]:
            assert await _read(local, key, start, end) == data[start:end], (start, end)
        stream = await local.read(key, 100)
        first = await stream.__anext__()
        assert first == data[100 : 100 + len(first)]
        await stream.aclose()
        with pytest.raises(NotFound):
            await local.read(input_key("missing"))

    run(go)


def test_stat_keys_delete_and_delete_prefix(backend: Backend) -> None:
    local = backend.storage
    a1, a2 = artifact_key("J", "t1", "a.txt"), artifact_key("J", "t1", "b.txt")
    b1 = artifact_key("J", "t2", "a.txt")
    other = artifact_key("JX", "t1", "a.txt")  # shares "J" as a string prefix only

    async def go() -> None:
        for i, key in enumerate([a1, a2, b1, other, input_key("J")]):
            await _put(local, key, b"x" * i)
        assert (await local.stat(a2)).size == 1  # type: ignore[union-attr]
        assert await local.stat(artifact_key("J", "t1", "nope")) is None
        assert await local.stat("artifacts/J") is None  # a directory is not an object
        assert await local.keys(artifacts_prefix("J")) == [a1, a2, b1]
        assert await local.keys("artifacts/J") == [a1, a2, b1, other]
        assert await local.keys("") == sorted([a1, a2, b1, other, input_key("J")])
        await local.delete_prefix(attempt_prefix("J", "t1"))
        assert await local.keys(artifacts_prefix("J")) == [b1]
        await local.delete(b1)
        await local.delete(b1)  # missing: not an error
        assert await local.keys("artifacts/") == [other]
        await local.delete_prefix("artifacts/J")  # a string prefix, as on S3
        assert await local.keys("") == [input_key("J")]
        await local.delete_prefix("nothing/")

    run(go)


def test_presign_is_refused(local: LocalStorage) -> None:
    with pytest.raises(PresignUnsupported):
        run(lambda: local.presign(input_key("J"), 60))


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "inputs/../../x", "tmp/x.part",
                                 "a//b", ""])
def test_keys_outside_the_root_are_refused(local: LocalStorage, key: str) -> None:
    for call in (lambda: local.open_writer(key), lambda: local.read(key),
                 lambda: local.stat(key), lambda: local.delete(key),
                 lambda: local.get_to_file(key, local.root.parent / "x"),
                 lambda: local.put_from_file(local.root.parent / "x", key)):
        with pytest.raises(BadKey):
            run(call)
    with pytest.raises(BadKey):
        run(lambda: local.keys("../"))


def test_sweep_removes_unfinished_writes(backend: Backend) -> None:
    local = backend.storage

    async def go() -> int:
        writer = await local.open_writer(input_key("J"))
        await writer.write(b"x" * (max(WRITE_BUFFER, objects.PART) + 1))
        await asyncio.sleep(0.3)  # the first part is on its way
        if backend.moto is None:  # moto dates every multipart upload in 2010: never young
            assert await local.sweep(older_than_s=3600) == 0  # too young
            # A local writer holds its temp file's lock: no sweep takes it while it writes.
            assert await local.sweep() == 0
            writer._fh.close()  # type: ignore[attr-defined]  # "crashed": the lock goes
        removed = await local.sweep()
        await writer.abort()  # the "crashed" writer's file handle
        return removed

    assert run(go) == 1
    assert backend.objects() == []


_WRITER = """
import asyncio, sys
from pathlib import Path
from conveyor.storage import LocalStorage, input_key

async def main():
    writer = await LocalStorage(Path(sys.argv[1])).open_writer(input_key("J"))
    await writer.write(b"x" * (1 << 20))
    print("written", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_sweep_leaves_the_writes_of_other_live_processes(tmp_path: Path) -> None:
    """Several processes on one data dir (a second ``conveyor serve``, a restart that
    overlaps the old process): a sweep, even without grace, takes only the temp files of
    writers that are gone, however old their last write."""
    root = tmp_path / "files"
    local = LocalStorage(root)
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
        [temp] = list((root / "tmp").iterdir())
        os.utime(temp, (time.time() - 3600, time.time() - 3600))  # last written an hour ago
        assert run(lambda: local.sweep()) == 0
        assert temp.exists()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    assert run(lambda: local.sweep()) == 1  # its writer is gone now
    assert list((root / "tmp").iterdir()) == []


def test_files_in_and_out_through_the_blocking_bridge(backend: Backend, tmp_path: Path) -> None:
    blocking = BlockingStorage(backend.storage)
    src = tmp_path / "work" / "out.bin"
    src.parent.mkdir()
    src.write_bytes(b"artifact")
    key = artifact_key("J", "t", "out.bin")
    blocking.put_from_file(src, key)
    assert src.read_bytes() == b"artifact"  # the source is left as it was
    assert blocking.read_bytes(key) == b"artifact"
    assert backend.objects() == [key]
    dst = tmp_path / "work" / "input"
    blocking.get_to_file(key, dst, hashlib.sha256(b"artifact").hexdigest())
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(b"artifact").digest()
    with pytest.raises(NotFound):
        blocking.get_to_file(input_key("missing"), tmp_path / "work" / "other")
    blocking.put_bytes(input_key("J"), b"in")
    assert blocking.stat(input_key("J")).size == 2  # type: ignore[union-attr]
    assert blocking.keys("inputs/") == [input_key("J")]
    blocking.delete_prefix("artifacts/")
    blocking.delete(input_key("J"))
    assert blocking.keys("") == []
    blocking.close()


def test_a_jobs_outputs_stored_at_once(backend: Backend, tmp_path: Path) -> None:
    """put_many: every file stored whole under its key; with one that cannot be stored, the
    others still end (stored, for the caller to drop) before its error is raised."""
    blocking = BlockingStorage(backend.storage)
    work = tmp_path / "work"
    work.mkdir()
    files = []
    for i in range(6):  # more than MAX_PUTS threads
        src = work / f"w{i}.bin"
        src.write_bytes(os.urandom(1000 + i))
        files.append((src, artifact_key("J", "t", src.name)))
    blocking.put_many(files)
    assert backend.objects() == sorted(key for _, key in files)
    for src, key in files:
        assert blocking.read_bytes(key) == src.read_bytes()
    blocking.put_from_file(files[0][0], input_key("J"))  # the bridge still runs inline after
    assert blocking.stat(input_key("J")).size == 1000  # type: ignore[union-attr]

    blocking.delete_prefix("artifacts/")
    missing = work / "gone.bin"
    with pytest.raises((FileNotFoundError, StorageError)):  # local: the OS's; S3: wrapped
        blocking.put_many([files[1], (missing, artifact_key("J", "t", "gone.bin")), files[2]])
    assert backend.objects() == sorted([input_key("J"), files[1][1], files[2][1]])
    blocking.close()


def test_ping(backend: Backend) -> None:
    run(backend.storage.ping)
    assert backend.objects() == []


def test_factory(tmp_path: Path) -> None:
    made = from_url(f"file://{tmp_path / 'a'}")
    assert isinstance(made, LocalStorage) and made.root == tmp_path / "a"
    default = from_url(Settings(data_dir=tmp_path / "d"))
    assert isinstance(default, LocalStorage) and default.root == (tmp_path / "d" / "files")
    named = from_url(Settings(data_dir=tmp_path / "d", storage_url=f"file://{tmp_path / 'b'}"))
    assert isinstance(named, LocalStorage) and named.root == tmp_path / "b"
    s3 = from_url(Settings(data_dir=tmp_path / "d", storage_url="s3://bucket/some/prefix",
                           max_upload_bytes=200 * 1024**3))
    assert isinstance(s3, S3Storage)  # made without touching the network
    assert (s3.loc.bucket, s3.loc.prefix) == ("bucket", "some/prefix")
    assert s3.part_size == -(-200 * 1024**3 // 10_000) > 8 * 1024**2  # at most 10,000 parts
    assert from_url("s3://bucket").part_size == 8 * 1024**2  # type: ignore[attr-defined]
    for bad in ("ftp://x", "/no/scheme"):
        with pytest.raises(ValueError):
            from_url(bad)


def test_settings_accept_s3_and_refuse_other_schemes(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, storage_url="s3://bucket/p").unsupported() is None
    problem = Settings(data_dir=tmp_path, storage_url="gs://bucket").unsupported()
    assert problem is not None and "s3://bucket/prefix" in problem and "gs://" in problem


def test_a_locked_source_is_stored_and_a_linked_temp_is_left_alone(tmp_path: Path) -> None:
    """A tus upload's staged file stays locked while it is stored (``put_from_file`` links
    it): storing it must not wait for that lock (it did, forever). A temp file that is a
    second link of a file still there is a put under way, left alone by any sweep."""
    import fcntl

    local = LocalStorage(tmp_path / "files")
    src = tmp_path / "staged.bin"
    src.write_bytes(b"staged bytes")
    with open(src, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        done = threading.Thread(target=lambda: run(
            lambda: local.put_from_file(src, input_key("J"))), daemon=True)
        done.start()
        done.join(10)
        assert not done.is_alive(), "put_from_file waited for the source's lock"
    assert run(lambda: _read(local, input_key("J"))) == b"staged bytes"

    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"out")
    linked = local.root / "tmp" / "left-by-a-put.part"
    os.link(artifact, linked)  # what a put that crashed after its link leaves
    os.utime(linked, (time.time() - 3600, time.time() - 3600))
    assert run(lambda: local.sweep()) == 0 and linked.exists()
    artifact.unlink()  # the source is gone: the temp is the file's only name, a leftover
    assert run(lambda: local.sweep()) == 1 and not linked.exists()


def test_a_filesystem_without_locks_still_stores_and_sweeps_by_age(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NFS mounted ``nolock`` answers every ``flock`` with ENOLCK (fault-injected here: no such
    mount on this machine). Writes still complete; a sweep, unable to tell a live writer,
    removes only temp files last written over an hour ago."""
    import errno
    import fcntl

    import conveyor.storage.local as local_module

    def no_locks(_fd: int, _op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(local_module.fcntl, "flock", no_locks)
    assert fcntl.flock is no_locks  # the module's own fcntl: every caller sees it
    local = LocalStorage(tmp_path / "files")
    run(lambda: _put(local, input_key("J"), b"x" * (WRITE_BUFFER + 1)))
    assert run(lambda: _read(local, input_key("J"))) == b"x" * (WRITE_BUFFER + 1)

    async def go() -> tuple[int, list[Path], list[bool]]:
        writers = []
        for name in ("old", "recent"):
            writer = await local.open_writer(input_key(name))
            await writer.write(b"y" * (WRITE_BUFFER + 1))  # on disk, not completed
            writers.append(writer)
        temps = sorted((local.root / "tmp").iterdir(), key=lambda p: p.stat().st_mtime)
        old = time.time() - local_module.UNLOCKED_MIN_AGE_S - 60
        os.utime(temps[0], (old, old))
        removed = await local.sweep()
        alive = [p.exists() for p in temps]
        for writer in writers:
            await writer.abort()
        return removed, temps, alive

    removed, temps, alive = run(go)
    assert len(temps) == 2 and removed == 1
    assert alive == [False, True]  # the hour-old one went; the recent one is left
