"""One PATCH body: appended to its sink, hashed, checked, made durable, then counted.

The sink is the upload's staged file (:class:`FileSink`) or, on object storage, an object of
the PATCH's own (:mod:`conveyor.uploads.shared`). The body is read in chunks and queued in
1 MiB batches to threads (the running sha256, the checksum, the file's writes); the event
loop goes on reading meanwhile, so the disk, the hashes and the network overlap. Nothing
becomes part of the offset before it is durable and, with ``Upload-Checksum``, verified: a
mismatch discards the body and appends nothing.
A body cut short keeps what arrived (tus: "store as much of the received data as
possible"), unless it carried a checksum, which can then never be verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from anyio import CancelScope, to_thread
from starlette.requests import ClientDisconnect

from conveyor.errors import ChecksumMismatch, TooLarge, UploadAborted
from conveyor.uploads.protocol import ALGORITHMS
from conveyor.uploads.staging import StagedFile

#: Bytes per batch (memory per PATCH: the batch being read and up to DEPTH queued).
BATCH = 1024 * 1024
#: Batches queued per lane before the reading of the body waits.
DEPTH = 4


@dataclass(slots=True)
class Received:
    offset: int
    #: sha256 of the upload's bytes up to ``offset`` (None: not known here).
    sha256: Any | None
    #: The body ended early (the client went away): what arrived is kept, nothing more.
    cut_short: bool = False


class _Lane(threading.Thread):
    """A thread that applies ``step`` to each batch, in order, while the loop reads on.

    The event loop only queues batches (it waits only when ``depth`` are queued: the
    back-pressure and the memory bound); the thread tells it, batch by batch, that there is
    room again. No thread hop per batch on the loop's side."""

    def __init__(self, step: Callable[[bytes], object], depth: int) -> None:
        super().__init__(name="conveyor-tus-lane", daemon=True)
        self.step = step
        self.loop = asyncio.get_running_loop()
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.room = asyncio.Semaphore(depth)
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            while (data := self.queue.get()) is not None:
                if self.error is None:
                    try:
                        self.step(data)
                    except BaseException as exc:  # handed to the loop by put() / close()
                        self.error = exc
                self.loop.call_soon_threadsafe(self.room.release)
        finally:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def put(self, data: bytes) -> None:
        await self.room.acquire()
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    async def close(self) -> None:
        """Wait for every queued batch; raise the step's error, if one failed."""
        self.queue.put(None)
        await asyncio.shield(self.done)
        if self.error is not None:
            raise self.error


class Sink(Protocol):
    """Where one PATCH body's bytes go: the staged file, or an object of their own."""

    async def open(self) -> None:
        """Before the first byte."""

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None:
        """Make every byte written durable (the body is whole, or cut short and kept)."""

    async def discard(self) -> None:
        """Keep nothing of this body (an error, a checksum mismatch)."""


class FileSink:
    """Appends to the locked staged file at the durable offset ``start``, from a lane thread
    (``os.write`` releases the GIL); ``commit`` fsyncs, ``discard`` cuts the file back."""

    def __init__(self, staged: StagedFile, start: int) -> None:
        self.staged, self.start = staged, start
        self.lane: _Lane | None = None

    async def open(self) -> None:
        await to_thread.run_sync(self.staged.cut, self.start)
        self.lane = _Lane(self.staged.write, DEPTH)

    async def write(self, data: bytes) -> None:
        assert self.lane is not None
        await self.lane.put(data)

    async def commit(self) -> None:
        assert self.lane is not None
        await self.lane.close()
        await to_thread.run_sync(self.staged.sync)

    async def discard(self) -> None:
        if self.lane is not None:
            await _close_quietly(self.lane)
        await to_thread.run_sync(self.staged.cut, self.start)


async def _close_quietly(lane: _Lane) -> None:
    """Let the batches in flight end (their errors are not the caller's: it is already
    failing with its own)."""
    try:
        await lane.close()
    except BaseException:
        pass


async def receive(stream: AsyncIterator[bytes], sink: Sink, start: int, length: int,
                  sha256: Any | None, checksum: tuple[str, bytes] | None) -> Received:
    """Append the body at ``start`` (the durable offset); never past ``length``.

    ``sha256`` covers the bytes before ``start`` (None: unknown here, nothing is hashed)."""
    await sink.open()
    running = sha256.copy() if sha256 is not None else None
    verify = ALGORITHMS[checksum[0]]() if checksum is not None else None
    # The running sha256 and the checksum each in a lane of their own (as the file sink's
    # writes): a PATCH costs the slowest of them, not their sum (hashlib releases the GIL).
    hashes = [_Lane(h.update, DEPTH) for h in (running, verify) if h is not None]

    async def push(data: bytes) -> None:
        for lane in hashes:
            await lane.put(data)
        await sink.write(data)

    buf = bytearray()
    got = 0
    cut_short = False
    try:
        try:
            async for chunk in stream:
                got += len(chunk)
                if start + got > length:
                    raise TooLarge(f"the PATCH goes past Upload-Length ({length} bytes)")
                buf += chunk
                if len(buf) >= BATCH:
                    await push(bytes(buf))
                    buf.clear()
        except ClientDisconnect:
            if verify is not None:
                raise UploadAborted("the client went away mid-body: its Upload-Checksum "
                                    "cannot be verified, nothing was kept") from None
            cut_short = True
        if buf:
            await push(bytes(buf))
        for lane in hashes:
            await lane.close()
        if verify is not None and checksum is not None and verify.digest() != checksum[1]:
            raise ChecksumMismatch(f"the body's {checksum[0]} is not the Upload-Checksum: "
                                   "nothing was appended")
        await sink.commit()
    except BaseException:
        with CancelScope(shield=True):
            for lane in hashes:
                await _close_quietly(lane)
            await sink.discard()
        raise
    return Received(start + got, running, cut_short)


def new_sha256() -> Any:
    return hashlib.sha256()
