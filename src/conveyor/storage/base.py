"""The storage protocol: where input files and artifacts live, without local paths.

Shaped so that an object store (S3) fits as well as a directory:

- The key is chosen **before** the bytes are written (:meth:`Storage.open_writer`); there is
  no rename step a caller could see. Keys come from :mod:`conveyor.storage.keys` only.
- A :class:`Writer` takes chunks through ``await write(chunk)``; awaiting it is the
  back-pressure (a backend may buffer a little, then waits for its disk or its upload).
  ``await complete()`` returns only when the bytes are durable **and** visible under the key,
  atomically (local: fsync the temp file, rename, fsync the directory; S3:
  ``CompleteMultipartUpload``). ``await abort()`` leaves nothing behind.
- A full disk raises :class:`conveyor.errors.InsufficientStorage` (507 at the edge, a retried
  attempt in a worker) from any write; what was being written is not kept.
- Reads are async byte iterators, optionally ranged; nothing hands out a filesystem path.

**Async only.** Every method is a coroutine. The API awaits them on its event loop; the
synchronous worker processes use :class:`conveyor.storage.blocking.BlockingStorage`, a tiny
bridge that runs each call to completion on a private loop (``get_to_file`` /
``put_from_file`` move whole files between storage and a work directory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from conveyor import errors


class StorageError(Exception):
    """A storage operation failed."""


class StorageUnavailable(StorageError, errors.StorageUnavailable):
    """The storage cannot be reached or refused the request (503 with Retry-After at the API)."""


class NotFound(StorageError):
    """No object under that key."""


class PresignUnsupported(StorageError):
    """This backend cannot hand out URLs to its objects (local storage never can)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    #: Last change, in seconds since the epoch (None when the backend cannot tell).
    modified: float | None = None


class Writer(Protocol):
    """An object being written under a key chosen up front."""

    async def write(self, data: bytes | bytearray) -> None:
        """Add bytes; returns once the backend can take more (back-pressure)."""
        ...

    async def complete(self) -> None:
        """Make the bytes durable, then visible under the key atomically."""
        ...

    async def abort(self) -> None:
        """Drop the bytes; nothing is left behind. A no-op after complete or abort."""
        ...


class ByteStream(Protocol):
    """An open read: iterate for chunks; ``aclose`` when stopping early."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Storage(Protocol):
    #: True when several machines share the storage (S3): a write that is not yet a job may be
    #: another node's, so sweeps only remove what is older than a grace period.
    shared: ClassVar[bool]

    async def open_writer(self, key: str) -> Writer:
        """Start writing ``key``; nothing is visible under it until ``complete()``."""
        ...

    async def read(self, key: str, start: int = 0, end: int | None = None) -> ByteStream:
        """Bytes ``start`` up to (not including) ``end``; raises :class:`NotFound` at once."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with ``prefix``."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...

    async def presign(self, key: str, expires_s: float) -> str:
        """A URL that reads ``key`` without conveyor; raises :class:`PresignUnsupported`."""
        ...

    async def get_to_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """Materialise ``key`` as the new file ``path`` (its directory exists).

        A backend may hard-link instead of copying: treat ``path`` as read-only. A backend
        that copies bytes over a network checks them against ``sha256`` when given (a
        mismatch is a :class:`StorageError`; a local link has no bytes in transit).
        Raises :class:`NotFound`."""
        ...

    async def put_from_file(self, path: Path, key: str) -> None:
        """Store the finished file ``path`` under ``key``, durably (like ``complete()``)."""
        ...

    async def sweep(self, older_than_s: float = 0.0) -> int:
        """Remove writes never completed (crashed writers) older than that; return how many."""
        ...

    async def ping(self) -> None:
        """Raise if the storage cannot be written."""
        ...

    async def free_bytes(self) -> int | None:
        """Bytes that may still be written, or None when the backend has no such limit
        (an object store). Compared with ``CONVEYOR_MIN_FREE_BYTES``."""
        ...


@runtime_checkable
class Immediate(Protocol):
    """A backend whose lookups are plain file-system calls offers them as blocking calls too.

    A synchronous caller (a worker) then skips the event loop it would otherwise run each
    call on, which costs ten times the ``stat`` itself; short jobs make two such calls.
    """

    def stat_now(self, key: str) -> ObjectInfo | None: ...

    def keys_now(self, prefix: str) -> list[str]: ...

    def free_bytes_now(self) -> int | None: ...

