"""A URL import's first step: fetch the input into storage, then record it on the job.

Runs in the worker (embedded or Celery) before the pipeline, on the worker's blocking bridge
to the storage protocol. The bytes go under the job's own input key through a writer that is
aborted on any failure, so an attempt that fails (and is retried) leaves nothing behind; the
next attempt starts the fetch over. Only once the bytes are complete are the job's input
columns filled, in a write fenced by the attempt's lease token.
"""

from __future__ import annotations

import dataclasses
import logging

from conveyor.errors import LeaseLost, ProcessorError
from conveyor.ingest.url_fetch import Fetched, FetchLimits, fetch
from conveyor.models import ErrorCode
from conveyor.processors.sniff import sniff
from conveyor.storage import BlockingStorage
from conveyor.store import Claim, Job, Store

log = logging.getLogger("conveyor.worker")


def fetch_url_input(storage: BlockingStorage, store: Store, claim: Claim,
                limits: FetchLimits) -> Job:
    """Fetch ``claim.job``'s URL into its input key; return the job with its input filled.

    Raises ``ProcessorError`` (``url_unreachable``, ``url_status``, ``url_forbidden``,
    ``too_large``, ``cancelled``) or :class:`LeaseLost`.
    """
    job = claim.job
    assert job.input_url is not None

    async def download() -> Fetched:
        writer = await storage.storage.open_writer(job.input_key)
        try:
            got = await fetch(job.input_url or "", writer, limits)
            # The bytes become visible only if this attempt still owns the job (a stale
            # attempt must not replace what a newer one fetched) and nobody cancelled it.
            if store.attempts.cancel_requested(job.id, claim.token):
                fresh = store.jobs.get(job.id)
                if fresh is None or fresh.lease_token != claim.token:
                    raise LeaseLost(job.id)
                raise ProcessorError(ErrorCode.CANCELLED, "cancelled while fetching")
            await writer.complete()
        except BaseException:
            await writer.abort()
            raise
        return got

    got = storage.run(download())
    media_type = sniff(got.head, job.input_filename, got.declared_type)
    store.attempts.fill_input(job.id, claim.token, job.input_filename, got.size, got.sha256,
                              media_type, got.declared_type)
    log.info("job %s: fetched %d bytes (%s)", job.id, got.size, media_type)
    return dataclasses.replace(job, input_size=got.size, input_sha256=got.sha256,
                               media_type=media_type, declared_type=got.declared_type)
