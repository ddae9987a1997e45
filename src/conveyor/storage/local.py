"""Local-disk storage: one root directory; writes go to ``<root>/tmp`` and are renamed in.

Blocking file calls run in a thread (``asyncio.to_thread``), so the event loop never waits on
the disk; the worker's blocking bridge runs them inline instead.

Several processes may share the root (``conveyor serve`` processes on one data dir, their
workers, a restart that overlaps the process it replaces). A temp file is ``flock``-ed by its
writer for as long as it is written, so a sweep, in whichever process, removes only the temp
files of writers that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar

from conveyor.errors import InsufficientStorage
from conveyor.storage.base import NotFound, ObjectInfo, PresignUnsupported, StorageError
from conveyor.storage.dirsync import DirSync
from conveyor.storage.keys import BadKey, check_key, check_prefix

log = logging.getLogger("conveyor.storage")

TMP = "tmp"
#: Bytes a writer gathers before one write to disk: one thread hop per this many bytes, and
#: at most this much memory per upload in flight (800 concurrent uploads: 200 MiB).
WRITE_BUFFER = 256 * 1024
READ_CHUNK = 256 * 1024


#: errno values that mean "no room": the disk is full, or the user's quota is.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _room() -> Iterator[None]:
    """Turn a full disk into :class:`InsufficientStorage` (the caller's cleanup still runs)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise InsufficientStorage("the storage disk is full") from exc
        raise


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


#: Directory fsyncs shared by the renames of concurrent writes (one per process).
_DIRS = DirSync()


def _fsync_dir(path: Path) -> None:
    _DIRS.sync(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each entry made durable in its parent."""
    if path.is_dir():
        return
    _makedirs(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    _fsync_dir(path.parent)


#: errno values of a filesystem that cannot ``flock`` (NFS mounted ``nolock``, some FUSE).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})
#: Where temp files cannot be locked, a sweep removes one only once it was last written this
#: long ago: a live writer writes far more often (a stalled body times out long before).
UNLOCKED_MIN_AGE_S = 3600.0
_warned: set[str] = set()


def _cannot_lock(path: Path | str, exc: OSError) -> bool:
    """Whether ``exc`` says the filesystem has no locks (warned once per directory)."""
    if exc.errno not in _NO_LOCKS:
        return False
    folder = os.path.dirname(path)
    if folder not in _warned:
        _warned.add(folder)
        log.warning("%s cannot be locked (%s): its temp files are swept by age alone, once "
                    "an hour old", folder, os.strerror(exc.errno or 0))
    return True


def _create_locked(path: Path) -> int:
    """Create the temp file ``path``; a descriptor of it holding its ``flock``. A sweep may
    remove the file between its creation and the lock: then the lock is on a name that is
    gone, and the file is made again. On a filesystem without locks the descriptor holds none
    (see :data:`UNLOCKED_MIN_AGE_S`)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if _cannot_lock(path, exc):
                return fd
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_unlocked(path: str, mtime: float) -> int:
    """Remove the temp file at ``path`` unless a writer holds its lock: 1 if removed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a writer, in this process or another, is still at it
        except OSError as exc:
            if not _cannot_lock(path, exc):
                raise
            if mtime > time.time() - UNLOCKED_MIN_AGE_S:
                return 0  # no lock to tell: only an old file is surely a dead writer's
        os.unlink(path)  # under the lock: a writer that locks it next sees the name gone
        return 1
    finally:
        os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    """The bytes of ``tmp`` are durable: rename them to ``target`` and make the rename durable."""
    _makedirs(target.parent)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


class LocalWriter:
    """Writes to a temp file, opened with the first bytes that reach the disk: an upload that
    fits in the buffer costs one thread hop (open, write, fsync, rename, all in ``complete``)."""

    def __init__(self, tmp: Path, target: Path) -> None:
        self._tmp, self._target = tmp, target
        self._fh: BinaryIO | None = None
        self._buf = bytearray()
        self._done = False

    def _file(self) -> BinaryIO:
        if self._fh is None:
            # Locked until closed (by complete or abort): no sweep takes it meanwhile.
            self._fh = open(_create_locked(self._tmp), "wb")
        return self._fh

    def _write(self, chunk: bytes | bytearray) -> None:
        self._file().write(chunk)

    async def write(self, data: bytes | bytearray) -> None:
        if self._done:
            raise StorageError("write after complete or abort")
        if not self._buf and len(data) >= WRITE_BUFFER:
            chunk: bytes | bytearray = data  # large enough already: no copy into the buffer
        else:
            self._buf += data
            if len(self._buf) < WRITE_BUFFER:
                return
            chunk, self._buf = self._buf, bytearray()  # handed to the thread, not copied
        with _room():
            await asyncio.to_thread(self._write, chunk)

    async def complete(self) -> None:
        if self._done:
            raise StorageError("complete after complete or abort")
        self._done = True
        tail, self._buf = self._buf, bytearray()
        await asyncio.to_thread(self._complete, tail)

    def _complete(self, tail: bytes | bytearray) -> None:
        try:
            with _room(), self._file() as fh:
                fh.write(tail)
                fh.flush()
                os.fsync(fh.fileno())  # the bytes are durable before they get a name
            with _room():
                _publish(self._tmp, self._target)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._buf.clear()
            if self._fh is not None:  # nothing reached the disk: nothing to remove
                await asyncio.to_thread(self._drop, self._fh)

    def _drop(self, fh: BinaryIO) -> None:
        try:
            # Closing flushes what a failed write left buffered: on a full disk that fails
            # again, and must not hide why the write was aborted.
            with contextlib.suppress(OSError):
                fh.close()
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalReader:
    def __init__(self, fh: BinaryIO, remaining: int) -> None:
        self._fh, self._remaining = fh, remaining

    def __aiter__(self) -> LocalReader:
        return self

    async def __anext__(self) -> bytes:
        data = b""
        if self._remaining > 0 and not self._fh.closed:
            data = await asyncio.to_thread(self._fh.read, min(READ_CHUNK, self._remaining))
        if not data:
            self._fh.close()
            raise StopAsyncIteration
        self._remaining -= len(data)
        return data

    async def aclose(self) -> None:
        self._fh.close()


class LocalStorage:
    """Objects are files under ``root``; ``root/tmp`` holds writes not yet completed."""

    shared: ClassVar[bool] = False

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / TMP
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # The key pattern admits no '..', no absolute path and no empty part, and conveyor
        # makes no links under the root, so the joined path stays inside it.
        check_key(key)
        if key.split("/", 1)[0] == TMP:
            raise BadKey(f"key inside the temp area: {key!r}")
        return self.root / key

    def _new_tmp(self) -> Path:
        return self._tmp / f"{uuid.uuid4().hex}.part"

    async def open_writer(self, key: str) -> LocalWriter:
        return LocalWriter(self._new_tmp(), self._path(key))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> LocalReader:
        path = self._path(key)

        def open_at() -> tuple[BinaryIO, int]:
            try:
                fh = open(path, "rb")
            except (FileNotFoundError, IsADirectoryError):
                raise NotFound(key) from None
            size = os.fstat(fh.fileno()).st_size
            fh.seek(start)
            return fh, max(0, min(size if end is None else end, size) - start)

        fh, remaining = await asyncio.to_thread(open_at)
        return LocalReader(fh, remaining)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self.stat_now, key)

    def stat_now(self, key: str) -> ObjectInfo | None:
        """:meth:`stat`, as one blocking call (see :class:`~conveyor.storage.base.Immediate`)."""
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> None:
        if prefix.endswith("/"):  # a whole directory: drop it, subdirectories and all
            await asyncio.to_thread(shutil.rmtree, self._path(prefix[:-1]), ignore_errors=True)
            return
        for key in await self.keys(prefix):
            await self.delete(key)

    async def keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self.keys_now, prefix)

    def keys_now(self, prefix: str) -> list[str]:
        """:meth:`keys`, as one blocking call (see :class:`~conveyor.storage.base.Immediate`)."""
        check_prefix(prefix)
        return self._keys(prefix)

    def _keys(self, prefix: str) -> list[str]:
        if prefix.endswith("/") and prefix != TMP + "/":  # one directory: walk it, not its parent
            inside = [os.path.join(dirpath, name)
                      for dirpath, _dirs, files in os.walk(self.root / prefix[:-1])
                      for name in files]
            return sorted(str(Path(p).relative_to(self.root)) for p in inside)
        folder, _, start = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        found: list[str] = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(base):
                if not entry.name.startswith(start) or (not folder and entry.name == TMP):
                    continue
                if entry.is_file():
                    found.append(entry.path)
                for dirpath, _dirs, files in os.walk(entry.path):
                    found.extend(os.path.join(dirpath, name) for name in files)
        return sorted(str(Path(p).relative_to(self.root)) for p in found)

    async def presign(self, key: str, expires_s: float) -> str:
        raise PresignUnsupported("local storage has no URLs: download through the API")

    async def get_to_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        # A link or a local copy moves no bytes over a network: sha256 is not re-checked.
        await asyncio.to_thread(self._get_to_file, self._path(key), path, key)

    @staticmethod
    def _get_to_file(src: Path, dst: Path, key: str) -> None:
        try:
            try:
                os.link(src, dst)  # same filesystem: no bytes copied
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                shutil.copyfile(src, dst)  # another filesystem (or no hard links)
        except FileNotFoundError:
            raise NotFound(key) from None

    async def put_from_file(self, path: Path, key: str) -> None:
        await asyncio.to_thread(self._put_from_file, path, self._path(key))

    def _put_from_file(self, src: Path, target: Path) -> None:
        tmp = self._new_tmp()
        fd: int | None = None
        try:
            with _room():
                try:
                    # The source stays where it is, untouched. A sweep leaves a temp file with
                    # a second link alone: no lock here, as the source may hold one (a tus
                    # upload's staged file does, while it is stored).
                    os.link(src, tmp)
                    _fsync_file(tmp)
                except OSError:  # another filesystem, or no hard links: a locked copy
                    fd = _create_locked(tmp)
                    with open(src, "rb") as fin, open(fd, "wb", closefd=False) as fout:
                        shutil.copyfileobj(fin, fout, 1024 * 1024)
                    os.fsync(fd)
                _publish(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if fd is not None:
                os.close(fd)

    async def sweep(self, older_than_s: float = 0.0) -> int:
        return await asyncio.to_thread(self._sweep, time.time() - older_than_s)

    def _sweep(self, cutoff: float) -> int:
        """Remove the temp files last written before ``cutoff`` whose writer is gone: no
        process holds their lock, and they are not a second link to a file that is still
        there (a ``put_from_file`` under way, whose source may be locked by its owner)."""
        removed = 0
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                if st.st_mtime <= cutoff and st.st_nlink == 1:
                    removed += _remove_unlocked(entry.path, st.st_mtime)
        return removed

    async def ping(self) -> None:
        await asyncio.to_thread(self._ping)

    def _ping(self) -> None:
        probe = self._tmp / f".ping-{uuid.uuid4().hex}"
        with _room():
            probe.write_bytes(b"")
        probe.unlink()

    async def free_bytes(self) -> int | None:
        return await asyncio.to_thread(free_bytes, self.root)

    def free_bytes_now(self) -> int | None:
        """:meth:`free_bytes`, as one blocking call (a ``statvfs``)."""
        return free_bytes(self.root)
