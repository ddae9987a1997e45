"""One PATCH body: appended to the staged file, hashed, checked, made durable, then counted.

The body is read in chunks and handed to threads in 1 MiB batches; while one batch is
written (and hashed) the next is read from the socket, so the disk, the hashes and the network
overlap. Nothing becomes part of the offset before it is fsynced and, with ``Upload-Checksum``,
verified: a mismatch cuts the file back and appends nothing. A body cut short keeps what
arrived (tus: "store as much of the received data as possible"), unless it carried a checksum,
which can then never be verified.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from anyio import CancelScope, to_thread
from starlette.requests import ClientDisconnect

from conveyor.errors import ChecksumMismatch, TooLarge
from conveyor.uploads.protocol import ALGORITHMS
from conveyor.uploads.staging import StagedFile

#: Bytes per batch: one thread hop each, and (with the batch being read) ~2 MiB per PATCH.
BATCH = 1024 * 1024


@dataclass(slots=True)
class Received:
    offset: int
    #: sha256 of the upload's bytes up to ``offset``.
    sha256: Any
    #: The body ended early (the client went away): what arrived is kept, nothing more.
    cut_short: bool = False


class _Batches:
    """Write-and-hash batches in threads, one batch at a time, behind the reading of the body.

    The write, the running sha256 and the checksum of one batch run in three threads at once
    (``os.write`` and hashlib release the GIL), so a PATCH costs the slowest of them, not
    their sum."""

    def __init__(self, staged: StagedFile, sha256: Any, checksum: Any) -> None:
        self.staged, self.sha256, self.checksum = staged, sha256, checksum
        self.pending: asyncio.Future[Any] | None = None

    async def push(self, data: bytes) -> None:
        await self.wait()
        steps = [to_thread.run_sync(self.staged.write, data),
                 to_thread.run_sync(self.sha256.update, data)]
        if self.checksum is not None:
            steps.append(to_thread.run_sync(self.checksum.update, data))
        self.pending = asyncio.gather(*steps)

    async def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def wait_quietly(self) -> None:
        """Let a batch in flight end before the file is cut back (its error is not ours)."""
        try:
            await self.wait()
        except BaseException:  # the caller is already failing with its own error
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
                raise
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
