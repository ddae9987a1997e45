"""Start-up and periodic housekeeping: crashed uploads' temp files, orphans, retention.

Everything goes through the storage protocol (listing included), so it works on any backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from anyio import to_thread

from conveyor.storage import Storage, artifacts_prefix, input_job_id
from conveyor.storage.keys import INPUTS
from conveyor.store import Store

if TYPE_CHECKING:
    from conveyor.uploads.service import TusUploads

log = logging.getLogger("conveyor.maintenance")


#: An input without a job row is an orphan only once it is this old: the upload that stored
#: it may still be committing its job, in this process or another on the same storage.
ORPHAN_MIN_AGE_S = 300.0


async def startup_sweep(store: Store, storage: Storage, grace_s: float = 0.0) -> dict[str, int]:
    """Remove writes of uploads that never got a 202, and inputs no job row points at.

    At start-up, and again every sweep interval (:func:`retention_loop`). Other processes may
    be writing meanwhile: other ``conveyor serve`` processes on the same data dir or storage,
    or the process a restart replaces. On local storage a temp file goes only once its writer
    is gone (its lock is free), so no grace is needed; on S3 only what is older than
    ``grace_s`` goes. An input without a job row goes once it is older than ``grace_s`` and
    than :data:`ORPHAN_MIN_AGE_S` (its upload may be between ``complete`` and its row's
    commit).
    """
    temps = await storage.sweep(grace_s)
    keys = await storage.keys(INPUTS)
    by_id = {job_id: key for key in keys if (job_id := input_job_id(key)) is not None}
    known = await to_thread.run_sync(store.maintenance.existing_ids, list(by_id))
    orphans = 0
    cutoff = time.time() - max(grace_s, ORPHAN_MIN_AGE_S)
    for job_id, key in by_id.items():
        if job_id in known:
            continue
        info = await storage.stat(key)
        if info is None or info.modified is None or info.modified > cutoff:
            continue
        await storage.delete(key)
        orphans += 1
    if temps or orphans:
        log.info("sweep removed %d unfinished writes and %d orphan inputs", temps, orphans)
    return {"temp_files": temps, "orphan_inputs": orphans}


def sweep_grace(storage: Storage, grace_s: float) -> float:
    """The grace period of sweeps: none for local storage, ``grace_s`` for shared storage."""
    return grace_s if storage.shared else 0.0


async def remove_job_data(store: Store, storage: Storage, job_id: str) -> None:
    """Tombstone the job (later reads answer 410), then delete its input and its artifacts.

    Artifacts another job reuses (the same storage keys, see :mod:`conveyor.store.reuse`) stay
    until the last job naming them goes.
    """
    for key in await to_thread.run_sync(store.jobs.delete, job_id):
        await storage.delete(key)
    prefix = artifacts_prefix(job_id)
    kept = await to_thread.run_sync(store.reuse.referenced, prefix)
    if not kept:
        await storage.delete_prefix(prefix)
        return
    for key in await storage.keys(prefix):
        if key not in kept:
            await storage.delete(key)


async def sweep_expired(store: Store, storage: Storage, now: float | None = None) -> int:
    """Delete the bytes of expired jobs and tombstone them (they answer 410)."""
    removed = 0
    now = time.time() if now is None else now
    expired = await to_thread.run_sync(store.maintenance.expired_jobs, now)
    for job_id in expired:
        await remove_job_data(store, storage, job_id)
        await to_thread.run_sync(store.maintenance.purge_history, job_id)
        removed += 1
    return removed


async def retention_loop(store: Store, storage: Storage, interval_s: float,
                         grace_s: float = 0.0, uploads: TusUploads | None = None) -> None:
    while True:
        with contextlib.suppress(Exception):
            n = await sweep_expired(store, storage)
            if n:
                log.info("retention sweep removed %d expired jobs", n)
        if uploads is not None:  # unfinished tus uploads past Upload-Expires, and their bytes
            with contextlib.suppress(Exception):
                n = await uploads.sweep()
                if n:
                    log.info("retention sweep removed %d expired uploads", n)
        await asyncio.sleep(interval_s)
        # Leftovers of crashed processes, and orphans too young at start-up (the start-up
        # sweep has just run when this loop begins: not again at once).
        with contextlib.suppress(Exception):
            await startup_sweep(store, storage, grace_s)
