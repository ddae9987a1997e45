"""tus uploads on object storage: any server goes on with any upload (no sticky sessions).

On S3 nothing is staged on a server's disk. Each PATCH streams its body into an object of its
own, ``chunks/{job id}/{start}-{token}``, and one transaction moves the upload's offset from
``start`` and records that chunk (:meth:`conveyor.store.uploads.Uploads.advance`). The
offset moves only from the value the PATCH started at, so of two PATCHes at one offset on two
servers one wins; the other's object is deleted and it answers 409 ``offset_mismatch``. No
lock is held across servers, so a server that dies mid-PATCH blocks nobody: the next PATCH
starts again from the durable offset (within one server, a second PATCH of the same upload
still gets 423).

The last byte makes the job's input, under the same prefix: an upload sent in one chunk keeps
that chunk as its input (nothing is copied); otherwise the input is a new object made of the
chunks (:meth:`S3Storage.compose`: inside S3 when each chunk but the last is at least one part
long, else streamed through this server). The input is hashed (the running sha256 when this
server received every chunk in order, else the input read back once) and the job committed as
on local storage. The other chunks go after the commit; those no receiving upload or job wants
(at any server) at the next sweep.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread

from conveyor.errors import OffsetMismatch, UploadGone, UploadLocked
from conveyor.processors.sniff import SNIFF_BYTES
from conveyor.settings import Settings
from conveyor.storage import NotFound
from conveyor.storage.keys import CHUNKS, chunk_job_id, chunk_key, chunk_prefix, composed_key
from conveyor.storage.s3 import S3Storage
from conveyor.store import Store
from conveyor.store.uploads import DONE, EXPIRED, RECEIVING, TERMINATED, Upload
from conveyor.uploads.finish import new_job
from conveyor.uploads.receive import Received, new_sha256, receive
from conveyor.uploads.service import TusUploads

log = logging.getLogger("conveyor.uploads")


class ObjectSink:
    """One PATCH body as one object (nothing is written for an empty body)."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage, self.key = storage, key
        self.writer: Any = None
        self.wrote = 0

    async def open(self) -> None:
        self.writer = await self.storage.open_writer(self.key)

    async def write(self, data: bytes) -> None:
        await self.writer.write(data)
        self.wrote += len(data)

    async def commit(self) -> None:
        if self.wrote:
            await self.writer.complete()
        else:
            await self.writer.abort()

    async def discard(self) -> None:
        await self.writer.abort()


class SharedUploads(TusUploads):
    """:class:`TusUploads` whose bytes live in the shared object storage."""

    def __init__(self, settings: Settings, store: Store, storage: S3Storage) -> None:
        super().__init__(settings, store, storage)
        self.objects = storage
        #: Uploads a request of this process is writing or finishing now.
        self._busy: set[str] = set()

    async def patch(self, upload_id: str, offset: int, body: AsyncIterator[bytes],
                    checksum: tuple[str, bytes] | None) -> tuple[Upload, bool]:
        upload = await self.load(upload_id)
        self._check_offset(upload, offset)
        if upload.state == DONE:
            return upload, False  # a repeat of the last PATCH (its answer was lost)
        if upload_id in self._busy:
            raise UploadLocked(f"another request is writing upload {upload_id}")
        self._busy.add(upload_id)
        try:
            key = chunk_key(upload.job_id, upload.offset, secrets.token_hex(8))
            got = await receive(body, ObjectSink(self.objects, key), upload.offset,
                                upload.length, self._running(upload), checksum)
            if got.offset > upload.offset:
                upload = await self._append(upload, got, key)
            if upload.offset == upload.length:
                upload = await self._finish(upload)
        finally:
            self._busy.discard(upload_id)
        return upload, got.cut_short

    async def terminate(self, upload_id: str, tenant_id: str | None = None) -> None:
        upload = await self.load(upload_id, tenant_id)
        # A done upload's job stays, with its input (DELETE /v1/jobs/{id} removes them); the
        # upload goes. A PATCH in flight finds the upload ended and deletes its own chunk.
        await to_thread.run_sync(self.store.uploads.end, upload_id, TERMINATED)
        await self._remove_chunks(upload.job_id)
        self._hashes.pop(upload_id, None)

    async def _remove_chunks(self, job_id: str, keep: str | None = None) -> None:
        """Remove the chunks of an upload that ended (no job can commit any more), but for
        its job's input: ``keep``, or looked up, if the job committed first."""
        if keep is None:
            keep = (await to_thread.run_sync(self.store.maintenance.input_keys,
                                             [job_id])).get(job_id)
        for key in await self.objects.keys(chunk_prefix(job_id)):
            if key != keep:
                await self.objects.delete(key)

    # -- internals -----------------------------------------------------------------------

    def _running(self, upload: Upload) -> Any | None:
        """The sha256 of the bytes before the upload's offset, if this process has it."""
        if upload.offset == 0:
            return new_sha256()
        cached = self._hashes.get(upload.id)
        return cached[1] if cached is not None and cached[0] == upload.offset else None

    async def _append(self, upload: Upload, got: Received, key: str) -> Upload:
        """Count the chunk ``key``, unless the upload moved on (another PATCH won) or ended
        meanwhile: then the chunk goes and the PATCH is refused."""
        try:
            return await self._advance(upload, got, key)
        except UploadGone:
            await self.objects.delete(key)
            now = await self.load(upload.id)  # 410 if it ended
            raise OffsetMismatch(f"another request moved upload {upload.id} to offset "
                                 f"{now.offset} meanwhile: nothing was appended") from None

    async def _finish(self, upload: Upload) -> Upload:
        """Make the input out of the chunks and commit the job (once, whoever finishes)."""
        try:
            chunks = await to_thread.run_sync(self.store.uploads.chunks, upload.id)
            at = 0
            for start, length, _key in chunks:
                if start != at:
                    raise OSError(f"upload {upload.id}: no chunk at offset {at}")
                at += length
            if at != upload.length:
                raise OSError(f"upload {upload.id}: its chunks end at {at}, not {upload.length}")
            if len(chunks) == 1:
                key = chunks[0][2]  # sent in one piece: that object is the input
            else:
                # An object of this finisher's own: another server finishing the same upload
                # at once never writes (nor, failing, deletes) the input that gets committed.
                key = composed_key(upload.job_id, secrets.token_hex(8))
                await self.objects.compose([(k, n) for _start, n, k in chunks], key)
            cached = self._hashes.get(upload.id)
            sha = cached[1] if cached is not None and cached[0] == upload.length else None
            head, sha = await self._read_back(key, upload.length, sha)
        except NotFound:
            # Another server finished (and removed the chunks), or the upload ended.
            now = await self.load(upload.id)
            if now.state == DONE:
                return now
            raise
        job = new_job(upload, sha.hexdigest(), head, self.settings)
        job.input_key = key
        self._hashes.pop(upload.id, None)
        if await to_thread.run_sync(self.store.uploads.finish, upload, job):
            await self._remove_chunks(upload.job_id, keep=key)
        elif len(chunks) > 1:
            await self.objects.delete(key)  # another finisher's input was committed
        return await self.load(upload.id)

    async def _read_back(self, key: str, length: int, sha: Any | None) -> tuple[bytes, Any]:
        """The input's first bytes (to sniff its type) and, unless known, its sha256."""
        head = bytearray()
        stream = await self.objects.read(key, 0, length if sha is None
                                         else min(length, SNIFF_BYTES))
        digest = new_sha256() if sha is None else sha
        try:
            async for chunk in stream:
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                if sha is None:
                    await to_thread.run_sync(digest.update, chunk)
        finally:
            await stream.aclose()
        return bytes(head), digest

    async def _complete(self, upload_id: str, length: int) -> Upload:
        """Finish a receiving upload that has every byte (a crash came before its job)."""
        upload = await self.load(upload_id)
        if upload.state != RECEIVING or upload.offset != upload.length \
                or upload_id in self._busy:
            return upload
        self._busy.add(upload_id)
        try:
            return await self._finish(upload)
        finally:
            self._busy.discard(upload_id)

    # -- maintenance ---------------------------------------------------------------------

    async def recover(self) -> dict[str, int]:
        adopted = await self._adopt_staged()
        return {**await super().recover(), "adopted": adopted}

    async def _adopt_staged(self) -> int:
        """Uploads this server staged on its disk before they went to S3 (an upgrade in the
        middle of uploads): their durable bytes become their first chunk."""
        adopted = 0
        for upload_id in await to_thread.run_sync(self.staging.ids):
            upload = await to_thread.run_sync(self.store.uploads.get, upload_id)
            if upload is not None and upload.state == RECEIVING and upload.offset > 0:
                key = chunk_key(upload.job_id, 0, secrets.token_hex(8))
                await self.objects.put_from_file(self.staging.path(upload_id), key)
                if await to_thread.run_sync(self.store.uploads.adopt, upload_id,
                                            upload.offset, key):
                    adopted += 1
                else:
                    await self.objects.delete(key)
            await to_thread.run_sync(self.staging.remove, upload_id)
        if adopted:
            log.info("tus: %d uploads staged on this server's disk moved to S3", adopted)
        return adopted

    async def _drop_strays(self) -> int:
        """Remove the chunks nothing wants: those of uploads that are not receiving, except
        a job's input."""
        by_job: dict[str, list[str]] = {}
        for key in await self.objects.keys(CHUNKS):
            job_id = chunk_job_id(key)
            if job_id is not None:
                by_job.setdefault(job_id, []).append(key)
        wanted = await to_thread.run_sync(self.store.uploads.receiving_jobs, list(by_job))
        inputs = await to_thread.run_sync(self.store.maintenance.input_keys, list(by_job))
        removed = 0
        for job_id, keys in by_job.items():
            if job_id in wanted:
                continue
            for key in keys:
                if key != inputs.get(job_id):
                    await self.objects.delete(key)
                    removed += 1
        return removed

    async def _drop(self, upload_id: str, due_before: float | None) -> int:
        """Expire an upload due before ``due_before``, with its chunks."""
        upload = await to_thread.run_sync(self.store.uploads.get, upload_id)
        if upload is None or due_before is None or not await to_thread.run_sync(
                self.store.uploads.end, upload_id, EXPIRED, due_before):
            return 0
        await self._remove_chunks(upload.job_id)
        self._hashes.pop(upload_id, None)
        return 1
