"""The last byte: the staged file becomes the job's input, and the job is committed once.

Order (each step may crash; the next HEAD, PATCH or start-up sweep starts again from 1):

1. the whole file's sha256 (the running hash, or the staged bytes hashed again);
2. the staged file is stored under ``inputs/{job id}`` (the job id was chosen at creation,
   so a repeat overwrites the same key with the same bytes);
3. one transaction marks the upload ``done`` and inserts the job (a conditional UPDATE: a
   second finisher writes nothing); the dispatcher is woken after its commit;
4. the staged file is removed (a crash here leaves a file the start-up sweep removes).
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from conveyor.ingest.params import clean_filename
from conveyor.processors.sniff import sniff
from conveyor.settings import Settings
from conveyor.storage import Storage, input_key
from conveyor.store import NewJob, Store
from conveyor.store.uploads import Upload
from conveyor.uploads.staging import Staging


def new_job(upload: Upload, sha256: str, head: bytes, settings: Settings) -> NewJob:
    params = upload.params
    filename = clean_filename(params.get("filename"))
    declared = params.get("declared_type")
    return NewJob(
        id=upload.job_id,
        pipeline=params.get("pipeline") or "auto",
        options=params.get("options"),
        input_key=input_key(upload.job_id),
        input_filename=filename,
        input_size=upload.length,
        input_sha256=sha256,
        media_type=sniff(head, filename, declared),
        declared_type=declared,
        priority=int(params.get("priority") or 0),
        max_attempts=int(params.get("max_attempts") or settings.max_attempts),
        timeout_s=float(params.get("timeout_s") or settings.job_timeout_s),
        webhook_url=params.get("webhook_url"),
        tenant_id=upload.tenant_id,
    )


async def finish(upload: Upload, sha256: Any, store: Store, storage: Storage,
                 staging: Staging, settings: Settings) -> bool:
    """Store the input and commit the job (the caller holds the upload's lock).

    Returns False when another finisher committed it first."""
    head = await to_thread.run_sync(staging.head, upload.id)
    await storage.put_from_file(staging.path(upload.id), input_key(upload.job_id))
    job = new_job(upload, sha256.hexdigest(), head, settings)
    done = await to_thread.run_sync(store.uploads.finish, upload, job)
    await to_thread.run_sync(staging.remove, upload.id)
    return done
