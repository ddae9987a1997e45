"""The bytes of unfinished uploads: one file per upload under ``{data dir}/uploads``.

Never ``/tmp``: the staged bytes must survive a reboot, and the data dir is the disk the
operator sized for uploads. Every call here blocks (run it in a thread).

The file may hold bytes past the upload's durable offset (a PATCH cut short, or refused for its
checksum, before it truncated them): the database's offset is the truth, and each PATCH first
cuts the file back to it. A PATCH holds an exclusive ``flock`` on the file for its whole
length, so two requests on one upload never interleave their bytes, in one server process or
in several on the same machine (and a crashed process's lock goes with it).

The bytes are on the disk of the server that received them. A server asked to go on with an
upload whose file it does not have refuses (``UploadElsewhere``) rather than start a new file
at a later offset: only an upload at offset 0 gets a new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from pathlib import Path

from conveyor.errors import UploadElsewhere
from conveyor.processors.sniff import SNIFF_BYTES

_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
READ_CHUNK = 1024 * 1024


def _elsewhere(upload_id: str) -> UploadElsewhere:
    return UploadElsewhere(f"the bytes of upload {upload_id} are not on this server: another "
                           "conveyor server received them; send the upload's requests there")


def valid_id(upload_id: str) -> bool:
    """A ULID as conveyor makes them: the only names that become paths here."""
    return bool(_ID.fullmatch(upload_id))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Written bytes are flushed to the disk (fdatasync) every this many, while the body is still
#: arriving: the fsync that ends a PATCH then has little left to do, so a large PATCH does not
#: wait for its whole body to reach the disk after its last byte came in.
FLUSH_EVERY = 8 * 1024 * 1024


class StagedFile:
    """An upload's staged file, open and locked; ``close()`` releases the lock."""

    def __init__(self, path: Path, fd: int, created: bool = False) -> None:
        self.path, self.fd = path, fd
        self.unflushed = 0
        #: This request made the file: it is removed again if the upload turns out to be
        #: another server's (:meth:`Staging.check`).
        self.created = created

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def cut(self, offset: int) -> None:
        """Drop what lies past ``offset`` (never acknowledged) and write from there."""
        os.ftruncate(self.fd, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.unflushed += len(data)
        if self.unflushed >= FLUSH_EVERY:
            os.fdatasync(self.fd)
            self.unflushed = 0

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)  # closing the descriptor releases the flock


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        if not valid_id(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return self.root / f"{upload_id}.bin"

    def lock(self, upload_id: str, *, create: bool) -> StagedFile | None:
        """Open and lock the upload's file, or None when another request holds it.

        ``create`` (an upload at offset 0) makes a missing file. Otherwise the upload's
        bytes must be here already; when the file is missing, another server received them
        (``UploadElsewhere``)."""
        path = self.path(upload_id)
        created = create and not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            raise _elsewhere(upload_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if created:
            _fsync_dir(self.root)  # the file's name is durable before an offset counts on it
        return StagedFile(path, fd, created)

    @staticmethod
    def check(staged: StagedFile, upload_id: str, offset: int) -> None:
        """Refuse (``UploadElsewhere``) a locked file that holds fewer than ``offset`` bytes:
        the upload moved on at another server meanwhile. A file made by this request is
        removed again (the lock is still held)."""
        if staged.size() >= offset:
            return
        if staged.created:
            staged.path.unlink(missing_ok=True)
        raise _elsewhere(upload_id)

    def sha256(self, upload_id: str, length: int) -> hashlib._Hash:
        """Hash the first ``length`` staged bytes (when this process lost its running hash)."""
        digest = hashlib.sha256()
        with open(self.path(upload_id), "rb") as fh:
            left = length
            while left > 0:
                data = fh.read(min(READ_CHUNK, left))
                if not data:
                    raise OSError(f"staged file of upload {upload_id} is shorter than {length}")
                digest.update(data)
                left -= len(data)
        return digest

    def head(self, upload_id: str) -> bytes:
        with open(self.path(upload_id), "rb") as fh:
            return fh.read(SNIFF_BYTES)

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.bin") if valid_id(p.stem))
