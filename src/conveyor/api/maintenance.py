"""Start-up and periodic housekeeping: crashed uploads' temp files, orphans, retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from anyio import to_thread

from conveyor.storage import LocalStorage
from conveyor.store import Store

log = logging.getLogger("conveyor.maintenance")


def startup_sweep(store: Store, storage: LocalStorage) -> dict[str, int]:
    """Remove temp files of uploads that never got a 202, and inputs no job row points at."""
    temps = storage.sweep_temp()
    inputs_dir = storage.root / "inputs"
    orphans = 0
    if inputs_dir.is_dir():
        names = os.listdir(inputs_dir)
        known = store.maintenance.existing_ids(names)
        for name in names:
            if name not in known:
                storage.delete(f"inputs/{name}")
                orphans += 1
    if temps or orphans:
        log.info("start-up sweep removed %d temp files and %d orphan inputs", temps, orphans)
    return {"temp_files": temps, "orphan_inputs": orphans}


def sweep_expired(store: Store, storage: LocalStorage, now: float | None = None) -> int:
    """Delete the bytes of expired jobs and tombstone them (they answer 410)."""
    removed = 0
    for job_id in store.maintenance.expired_jobs(time.time() if now is None else now):
        for key in store.jobs.delete(job_id):
            storage.delete(key)
        storage.delete_prefix(f"artifacts/{job_id}")
        store.maintenance.purge_history(job_id)
        removed += 1
    return removed


async def retention_loop(store: Store, storage: LocalStorage, interval_s: float) -> None:
    while True:
        with contextlib.suppress(Exception):
            n = await to_thread.run_sync(sweep_expired, store, storage)
            if n:
                log.info("retention sweep removed %d expired jobs", n)
        await asyncio.sleep(interval_s)
