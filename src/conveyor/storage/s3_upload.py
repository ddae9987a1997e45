"""S3 uploads: the streaming writer, the part-buffer budget, and S3 errors as storage errors.

A file smaller than one part is one ``PUT`` at ``complete()``. A larger one streams as a
multipart upload (obstore ``put_async`` fed from a one-slot queue): ``write`` waits while the
queue is full, which is the back-pressure, and every multipart upload first reserves its part
buffers from one budget per process (``CONVEYOR_S3_BUFFER_BYTES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from conveyor.errors import short_message
from conveyor.storage.base import NotFound, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from conveyor.storage.s3 import S3Storage

log = logging.getLogger("conveyor.storage.s3")

MIN_PART = 8 * 1024 * 1024
#: Parts of one upload in flight at once (obstore's ``max_concurrency``).
PART_CONCURRENCY = 2
#: Bytes handed to obstore at a time once a multipart upload runs.
FEED_CHUNK = 1024 * 1024
#: S3 allows 10,000 parts per upload.
MAX_PARTS = 10_000


def part_size(max_upload_bytes: int, least: int = MIN_PART) -> int:
    """At least ``least`` (8 MiB), and so large that the largest upload needs <= 10,000 parts."""
    return max(least, -(-max_upload_bytes // MAX_PARTS))


def reservation(part: int) -> int:
    """Memory one multipart upload may hold: obstore's parts in flight, its read buffer and the
    part it gathers, and the first part (handed over whole) in the queue."""
    return part * (PART_CONCURRENCY + 3)


class Budget:
    """Bytes of part buffers all uploads of this process may hold together."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        n = min(n, self.total)  # one upload larger than the budget still runs (alone)
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n
        return n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.free += n
            self._cond.notify_all()


def unavailable(exc: BaseException, what: str, *, missing: bool = True) -> StorageError:
    """The error to raise for an obstore/boto3 failure (the full one goes to the log).

    ``missing=False`` for writes: a 404 there (no bucket, an upload aborted under us) is an
    unusable storage, never a missing object."""
    if isinstance(exc, FileNotFoundError) and missing:
        return NotFound(what)
    if isinstance(exc, StorageError):
        return exc
    log.warning("S3 %s failed: %s", what, short_message(str(exc), 500))
    return StorageUnavailable(f"object storage unavailable ({type(exc).__name__})")



class S3Writer:
    def __init__(self, storage: S3Storage, key: str) -> None:
        self._s, self._key = storage, key
        self._buf = bytearray()
        self._queue: asyncio.Queue[bytes | BaseException | None] | None = None
        self._task: asyncio.Future[Any] | None = None
        self._held = 0
        self._done = False
        self._completed = False

    async def write(self, data: bytes | bytearray) -> None:
        if self._done:
            raise StorageError("write after complete or abort")
        self._buf += data
        # Until one part is full the upload may still be a single PUT; after that, obstore
        # gathers the parts itself and this writer only hands it small chunks.
        # (A chunk never spans two parts: obstore starts every part a chunk completes at once,
        # past its max_concurrency.)
        part = self._s.part_size
        if len(self._buf) >= (part if self._task is None else min(FEED_CHUNK, part)):
            chunk = bytes(self._buf)
            self._buf.clear()
            await self._send(chunk)

    async def _feed(self) -> AsyncIterator[bytes]:
        assert self._queue is not None
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item  # obstore then aborts its multipart upload
            yield item

    async def _send(self, chunk: bytes) -> None:
        if self._task is None:
            # Waiting here (budget spent by other uploads) stops this upload reading its socket.
            self._held = await self._s.budget.acquire(reservation(self._s.part_size))
            self._queue = asyncio.Queue(maxsize=1)
            store = self._s.store()
            import obstore

            self._task = asyncio.ensure_future(obstore.put_async(
                store, self._key, self._feed(), chunk_size=self._s.part_size,
                max_concurrency=PART_CONCURRENCY))
        await self._push(chunk)

    async def _push(self, item: bytes | None) -> None:
        """Queue ``item`` for obstore, unless its upload ended (failed) meanwhile: then raise.
        Waiting on both matters: a dead upload never frees the queue."""
        assert self._queue is not None and self._task is not None
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self._task.done() and (item is not None or self._task.exception() is not None):
            self._raise_from_task()

    def _raise_from_task(self) -> None:
        assert self._task is not None and self._task.done()
        exc = self._task.exception()
        raise unavailable(exc or StorageError("upload ended early"), f"upload {self._key}",
                          missing=False)

    async def complete(self) -> None:
        if self._done:
            raise StorageError("complete after complete or abort")
        self._done = True
        try:
            if self._task is None:
                await self._s.put_bytes(self._key, bytes(self._buf))
            else:
                if self._buf:
                    await self._send(bytes(self._buf))
                await self._push(None)
                try:
                    await self._task
                except Exception as exc:
                    raise unavailable(exc, f"complete {self._key}", missing=False) from None
        finally:
            self._buf = bytearray()
            await self._release()
        self._completed = True

    async def abort(self) -> None:
        if self._completed:
            return
        self._done = True
        self._buf = bytearray()
        task, self._task = self._task, None
        try:
            if task is not None:
                await self._stop(task)
                # obstore aborts on a failed feed, but not when cancelled or cut off: make sure.
                await self._s.abort_uploads(self._key)
                # complete() may have failed after S3 made the object visible.
                await self._s.delete(self._key)
        finally:
            await self._release()

    async def _stop(self, task: asyncio.Future[Any]) -> None:
        if not task.done():
            assert self._queue is not None
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()  # room for the stop signal
            self._queue.put_nowait(StorageError("upload aborted"))
            done, _ = await asyncio.wait({task}, timeout=30)
            if not done:
                task.cancel()
        with contextlib.suppress(BaseException):
            await task

    async def _release(self) -> None:
        held, self._held = self._held, 0
        if held:
            await self._s.budget.release(held)
