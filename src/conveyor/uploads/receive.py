"""One PATCH body: appended to the staged file, hashed, checked, made durable, then counted.

The body is read in chunks and queued in 1 MiB batches to two threads (the write with the
checksum, and the running sha256); the event loop goes on reading meanwhile, so the disk, the
hashes and the network overlap. Nothing becomes part of the offset before it is fsynced
and, with ``Upload-Checksum``, verified: a mismatch cuts the file back and appends nothing.
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
from typing import Any

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
    #: sha256 of the upload's bytes up to ``offset``.
    sha256: Any
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


class _Batches:
    """The write (with the checksum) and the running sha256 in two lanes: a PATCH costs the
    slower of the two, not their sum (``os.write`` and hashlib release the GIL)."""

    def __init__(self, staged: StagedFile, sha256: Any, checksum: Any) -> None:
        def write(data: bytes) -> None:
            staged.write(data)
            if checksum is not None:
                checksum.update(data)

        self.lanes = (_Lane(write, DEPTH), _Lane(sha256.update, DEPTH))

    async def push(self, data: bytes) -> None:
        for lane in self.lanes:
            await lane.put(data)

    async def wait(self) -> None:
        for lane in self.lanes:
            await lane.close()

    async def wait_quietly(self) -> None:
        """Let the batches in flight end before the file is cut back (their errors are not
        the caller's: it is already failing with its own)."""
        for lane in self.lanes:
            try:
                await lane.close()
            except BaseException:
                pass


async def receive(stream: AsyncIterator[bytes], staged: StagedFile, start: int, length: int,
                  sha256: Any, checksum: tuple[str, bytes] | None) -> Received:
    """Append the body at ``start`` (the durable offset); never past ``length``."""
    await to_thread.run_sync(staged.cut, start)
    running = sha256.copy()
    verify = ALGORITHMS[checksum[0]]() if checksum is not None else None
    batches = _Batches(staged, running, verify)
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
                    await batches.push(bytes(buf))
                    buf.clear()
        except ClientDisconnect:
            if verify is not None:
                raise UploadAborted("the client went away mid-body: its Upload-Checksum "
                                    "cannot be verified, nothing was kept") from None
            cut_short = True
        if buf:
            await batches.push(bytes(buf))
        await batches.wait()
        await to_thread.run_sync(staged.sync)
        if verify is not None and checksum is not None and verify.digest() != checksum[1]:
            raise ChecksumMismatch(f"the body's {checksum[0]} is not the Upload-Checksum: "
                                   "nothing was appended")
    except BaseException:
        with CancelScope(shield=True):
            await batches.wait_quietly()
            await to_thread.run_sync(staged.cut, start)
        raise
    return Received(start + got, running, cut_short)


def new_sha256() -> Any:
    return hashlib.sha256()
