"""Local-disk storage: temp file, fsync, atomic rename, all confined to one root directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from conveyor.storage.base import BadKey, check_key

TMP = "tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalTemp:
    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage
        self.path = storage.root / TMP / f"{uuid.uuid4().hex}.part"
        self.fh: BinaryIO | None = open(self.path, "xb")
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self.fh is not None, "write after commit/abort"
        self.fh.write(data)
        self.size += len(data)

    def flush_and_sync(self) -> None:
        """The slow half of a commit (fsync), separate so async callers can run it in a thread."""
        assert self.fh is not None
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def commit(self, key: str) -> None:
        target = self.storage.local_path(key)
        if self.fh is not None:
            self.flush_and_sync()
            self.fh.close()
            self.fh = None
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        _fsync_dir(target.parent)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._root_str = str(self.root)
        (self.root / TMP).mkdir(parents=True, exist_ok=True)

    def temp(self) -> LocalTemp:
        return LocalTemp(self)

    def local_path(self, key: str) -> Path:
        # The key pattern admits no '..', no absolute path and no empty part, and conveyor
        # makes no links under the root, so the joined path stays inside it.
        check_key(key)
        path = Path(os.path.join(self._root_str, key))
        if not path.as_posix().startswith(self._root_str + "/"):
            raise BadKey(f"key escapes the storage root: {key!r}")
        return path

    def open(self, key: str) -> BinaryIO:
        return open(self.local_path(key), "rb")

    def size(self, key: str) -> int:
        return self.local_path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.local_path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        path = self.local_path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.local_path(prefix.rstrip("/"))
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                yield str(Path(dirpath, name).relative_to(self.root))

    def sweep_temp(self, older_than_s: float = 0.0) -> int:
        removed = 0
        cutoff = time.time() - older_than_s
        for entry in os.scandir(self.root / TMP):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def ping(self) -> None:
        probe = self.root / TMP / f".ping-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()


def put_file(storage: LocalStorage, src: Path, key: str) -> None:
    """Move a finished file into ``key`` durably (fsync, rename, fsync the directory)."""
    target = storage.local_path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(src, target)
    except OSError:
        # Another filesystem: copy to a temp name beside the target, then rename.
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    _fsync_dir(target.parent)
