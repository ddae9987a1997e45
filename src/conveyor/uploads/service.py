"""What the tus routes call: create, read, append, terminate; and the maintenance sweeps.

One :class:`TusUploads` per server process. It keeps each upload's running sha256 in memory
(keyed by the offset it covers); a process that lost it (a restart, a PATCH that reached
another process) hashes the staged bytes again once, then runs on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from ulid import ULID

from conveyor.errors import (
    OffsetMismatch,
    UploadElsewhere,
    UploadGone,
    UploadLocked,
    UploadNotFound,
)
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.store import Store
from conveyor.store.uploads import DONE, EXPIRED, RECEIVING, TERMINATED, Upload
from conveyor.uploads.finish import finish
from conveyor.uploads.receive import FileSink, Received, new_sha256, receive
from conveyor.uploads.staging import StagedFile, Staging, valid_id

log = logging.getLogger("conveyor.uploads")

#: Running hashes kept per process (about 200 bytes each); a forgotten one costs one read of
#: the upload's bytes at its end.
MAX_HASHES = 10_000


class TusUploads:
    def __init__(self, settings: Settings, store: Store, storage: Storage) -> None:
        self.settings, self.store, self.storage = settings, store, storage
        self.staging = Staging(settings.data_dir / "uploads")
        self.expiry_s = settings.upload_expiry.total_seconds()
        #: upload id -> (offset, sha256 of the bytes before it), in the order the uploads last
        #: moved; past MAX_HASHES the oldest goes (an upload another server finished, or one
        #: abandoned, leaves its entry here).
        self._hashes: dict[str, tuple[int, Any]] = {}

    # -- reading -------------------------------------------------------------------------

    async def load(self, upload_id: str, tenant_id: str | None = None) -> Upload:
        """The upload, or 404 (never existed, or another tenant's: the same answer) / 410
        (terminated, expired)."""
        if not valid_id(upload_id):
            raise UploadNotFound(f"no upload {upload_id}")
        upload = await to_thread.run_sync(self.store.uploads.get, upload_id)
        if upload is None or (tenant_id is not None and upload.tenant_id != tenant_id):
            raise UploadNotFound(f"no upload {upload_id}")
        if upload.state in (TERMINATED, EXPIRED) or (
                upload.state == RECEIVING and upload.expires_at <= time.time()):
            raise UploadGone(f"upload {upload_id} was terminated or expired")
        return upload

    async def head(self, upload_id: str, tenant_id: str | None = None) -> Upload:
        """The upload (of ``tenant_id``, when given: see :meth:`load`); one whose bytes are
        all in but whose job a crash lost gets it now."""
        upload = await self.load(upload_id, tenant_id)
        if upload.state == RECEIVING and upload.offset == upload.length:
            upload = await self._complete(upload_id, upload.length)
        return upload

    # -- writing -------------------------------------------------------------------------

    async def create(self, *, tenant_id: str, length: int, metadata: str,
                     params: dict[str, Any]) -> Upload:
        upload = await to_thread.run_sync(lambda: self.store.uploads.create(
            upload_id=str(ULID()), job_id=str(ULID()), tenant_id=tenant_id, length=length,
            metadata=metadata, params=params, expires_at=time.time() + self.expiry_s))
        if length == 0:
            upload = await self._complete(upload.id, 0)  # an empty file is complete at once
        return upload

    async def patch(self, upload_id: str, offset: int, body: AsyncIterator[bytes],
                    checksum: tuple[str, bytes] | None) -> tuple[Upload, bool]:
        """Append ``body`` at ``offset``; returns the upload after it and whether the body
        was cut short (what arrived is kept)."""
        upload = await self.load(upload_id)
        self._check_offset(upload, offset)
        if upload.state == DONE:
            return upload, False  # a repeat of the last PATCH (its answer was lost)
        staged = await self._lock(upload_id, upload.offset)
        try:
            upload = await self.load(upload_id)  # another request may have moved it meanwhile
            if upload.state == DONE:
                return upload, False
            await to_thread.run_sync(self.staging.check, staged, upload_id, upload.offset)
            self._check_offset(upload, offset)
            got = await receive(body, FileSink(staged, upload.offset), upload.offset,
                                upload.length, await self._sha256(upload), checksum)
            upload = await self._advance(upload, got)
            if upload.offset == upload.length:
                upload = await self._finish_locked(upload)
        finally:
            await to_thread.run_sync(staged.close)
        return upload, got.cut_short

    async def terminate(self, upload_id: str, tenant_id: str | None = None) -> None:
        """Remove the upload and its bytes (of ``tenant_id``, when given: see :meth:`load`)."""
        upload = await self.load(upload_id, tenant_id)
        try:
            staged = await self._lock(upload_id, upload.offset)
        except UploadElsewhere:
            # Its bytes are on the server that received them, which removes them in its next
            # sweep: the upload ends here all the same.
            await to_thread.run_sync(self.store.uploads.end, upload_id, TERMINATED)
            return
        try:
            # A done upload's job stays (DELETE /v1/jobs/{id} removes it); the upload goes.
            await to_thread.run_sync(self.store.uploads.end, upload_id, TERMINATED)
            await to_thread.run_sync(self.staging.remove, upload_id)
            self._hashes.pop(upload_id, None)
        finally:
            await to_thread.run_sync(staged.close)

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _check_offset(upload: Upload, offset: int) -> None:
        if offset != upload.offset:
            raise OffsetMismatch(f"Upload-Offset is {offset}, the upload is at {upload.offset}")

    async def _lock(self, upload_id: str, offset: int) -> StagedFile:
        staged = await to_thread.run_sync(lambda: self.staging.lock(upload_id, create=offset == 0))
        if staged is None:
            raise UploadLocked(f"another request is writing upload {upload_id}")
        return staged

    async def _sha256(self, upload: Upload) -> Any:
        cached = self._hashes.get(upload.id)
        if cached is not None and cached[0] == upload.offset:
            return cached[1]
        if upload.offset == 0:
            return new_sha256()
        return await to_thread.run_sync(self.staging.sha256, upload.id, upload.offset)

    async def _advance(self, upload: Upload, got: Received,
                       chunk_key: str | None = None) -> Upload:
        if got.offset == upload.offset:
            return upload
        expires = time.time() + self.expiry_s
        moved = await to_thread.run_sync(self.store.uploads.advance, upload.id, upload.offset,
                                         got.offset, expires, chunk_key)
        if not moved:
            raise UploadGone(f"upload {upload.id} expired or was terminated meanwhile")
        if got.sha256 is not None:
            self._hashes.pop(upload.id, None)
            self._hashes[upload.id] = (got.offset, got.sha256)
            if len(self._hashes) > MAX_HASHES:  # forget the least recently moved upload
                self._hashes.pop(next(iter(self._hashes)))
        return await self.load(upload.id)

    async def _finish_locked(self, upload: Upload) -> Upload:
        sha = await self._sha256(upload)
        await finish(upload, sha, self.store, self.storage, self.staging, self.settings)
        self._hashes.pop(upload.id, None)
        return await self.load(upload.id)

    async def _complete(self, upload_id: str, length: int) -> Upload:
        """Finish a receiving upload that has every byte, unless a request holds it now or
        another server holds its bytes (that server finishes it, at its next HEAD or start)."""
        try:
            staged = await to_thread.run_sync(
                lambda: self.staging.lock(upload_id, create=length == 0))
        except UploadElsewhere:
            staged = None
        if staged is None:
            return await self.load(upload_id)
        try:
            upload = await self.load(upload_id)
            if upload.state == RECEIVING and upload.offset == upload.length:
                await to_thread.run_sync(self.staging.check, staged, upload_id, upload.length)
                upload = await self._finish_locked(upload)
            return upload
        except UploadElsewhere:
            return upload
        finally:
            await to_thread.run_sync(staged.close)

    # -- maintenance ---------------------------------------------------------------------

    async def recover(self) -> dict[str, int]:
        """At start-up: commit the jobs a crash left after their last byte, and remove
        staged files no receiving upload owns."""
        finished = 0
        for upload_id, length in await to_thread.run_sync(self.store.uploads.complete_unfinished):
            upload = await self._complete(upload_id, length)
            finished += upload.state == DONE
        removed = await self._drop_strays()
        if finished or removed:
            log.info("tus recovery: %d jobs committed, %d stray staged files removed",
                     finished, removed)
        return {"finished": finished, "removed": removed}

    async def sweep(self, now: float | None = None) -> int:
        """Expire unfinished uploads past their Upload-Expires, with their bytes; forget
        ended uploads older than the retention."""
        now = time.time() if now is None else now
        removed = 0
        for upload_id in await to_thread.run_sync(self.store.uploads.due, now):
            removed += await self._drop(upload_id, now)
        # Bytes of uploads that ended at another server (terminated or expired there).
        removed += await self._drop_strays()
        before = now - self.settings.retention.total_seconds()
        await to_thread.run_sync(self.store.uploads.forget, before)
        return removed

    async def _drop_strays(self) -> int:
        """Remove the staged files of this server that no receiving upload owns."""
        staged = await to_thread.run_sync(self.staging.ids)
        wanted = await to_thread.run_sync(self.store.uploads.receiving, staged)
        removed = 0
        for upload_id in staged:
            if upload_id not in wanted:
                removed += await self._drop(upload_id, None)
        return removed

    async def _drop(self, upload_id: str, due_before: float | None) -> int:
        try:
            staged = await to_thread.run_sync(lambda: self.staging.lock(upload_id, create=False))
        except UploadElsewhere:  # no bytes here (none sent yet, or another server has them)
            if due_before is None:
                return 0
            ended = await to_thread.run_sync(self.store.uploads.end, upload_id, EXPIRED,
                                             due_before)
            return int(ended)
        if staged is None:
            return 0  # a request is writing it: not expired, not stray
        try:
            if due_before is not None and not await to_thread.run_sync(
                    self.store.uploads.end, upload_id, EXPIRED, due_before):
                return 0
            await to_thread.run_sync(self.staging.remove, upload_id)
            self._hashes.pop(upload_id, None)
        finally:
            await to_thread.run_sync(staged.close)
        return 1
