"""The job routes: create (streamed upload), read, list, cancel, retry, delete, deliveries.

Downloads of inputs and artifacts are in :mod:`conveyor.api.downloads`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from anyio import CancelScope, to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from ulid import ULID

from conveyor.api.maintenance import remove_job_data
from conveyor.api.room import check_room
from conveyor.api.services import Services, services
from conveyor.api.upload_doc import UPLOAD_DOC
from conveyor.api.url_import import create_from_url, is_url_import
from conveyor.api.views import DeliveryOut, JobOut, JobPage, iso, job_view
from conveyor.auth import CanRead, CanWrite
from conveyor.auth.caller import TENANT_DOC
from conveyor.errors import (
    BadParameter,
    BadWebhookUrl,
    IdempotencyKeyReused,
    JobGone,
    NoFile,
    UploadAborted,
    UploadInFlight,
)
from conveyor.ingest.params import (
    JobParams,
    clean_filename,
    parse_content_disposition_filename,
    parse_params,
)
from conveyor.ingest.stream import Received, receive_multipart, receive_raw
from conveyor.models import JobState
from conveyor.problems import Problem, problem_schema
from conveyor.processors.sniff import sniff
from conveyor.storage import Writer, input_key
from conveyor.store import Job, NewJob, tombstoned_or_expired
from conveyor.telemetry import metrics
from conveyor.webhooks.ssrf import AllowList, UnsafeUrl, check_url

router = APIRouter(prefix="/v1", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: problem_schema() for s in (400, 401, 403, 404, 409, 410, 413, 422)
}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 429: problem_schema(), 503: problem_schema(), 507: problem_schema()}

def _validate(svc: Services, params: JobParams) -> tuple[str, Any]:
    return params.pipeline, svc.registry.validate(params.pipeline, params.options)


async def _check_webhook(svc: Services, url: str | None) -> None:
    if url is None:
        return
    allow = AllowList.parse(svc.settings.webhook_allow_private)
    try:
        await to_thread.run_sync(lambda: check_url(url, allow=allow))
    except UnsafeUrl as exc:
        raise BadWebhookUrl(str(exc)) from None


def _no_body(request: Request, query: dict[str, str]) -> bool:
    """A raw request with no body and no file name is no upload (a named empty file is one)."""
    if "transfer-encoding" in request.headers:
        return False
    if int(request.headers.get("content-length") or 0) != 0:
        return False
    return not query.get("filename") and "content-disposition" not in request.headers


def _same_request(job: Job, pipeline: str, options: Any, sha256: str | None = None,
                  size: int | None = None) -> None:
    """Idempotency: refuse a key whose job is gone, or that made ``job`` from another request.

    Called once the request's own parameters are valid: a bad request is a 4xx about itself
    whatever its key names (the fuzzer's "invalid data must be rejected" rule).
    """
    if tombstoned_or_expired(job):
        raise JobGone(f"job {job.id}, made with this Idempotency-Key, expired or was deleted")
    if (job.pipeline != pipeline or job.options != options
            or (sha256 is not None and job.input_sha256 != sha256)
            or (size is not None and job.input_size != size)):
        raise IdempotencyKeyReused(
            f"Idempotency-Key was used for job {job.id}, made from a different request"
        )


class _EarlyCheck:
    """Checks the multipart text parts sent before the file, when the file part begins."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.webhooks: set[str] = set()

    async def __call__(self, fields: dict[str, str]) -> None:
        params = parse_params(fields)
        if "pipeline" in fields:
            self.svc.registry.pipeline(params.pipeline)
            if "options" in fields:
                _validate(self.svc, params)
        await self.webhook(params.webhook_url)

    async def webhook(self, url: str | None) -> None:
        if url is not None and url not in self.webhooks:
            await _check_webhook(self.svc, url)
            self.webhooks.add(url)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    responses={200: {"description": "the job created earlier with this Idempotency-Key"},
               **_UPLOAD_ERRORS},
    openapi_extra=UPLOAD_DOC,
    summary="Upload a file (or import one from a URL) and create a job",
)
async def create_job(
    request: Request,
    svc: Svc,
    caller: CanWrite,
    idempotency_key: Annotated[str | None, Header(max_length=300)] = None,
) -> Response:
    started = time.monotonic()
    if svc.drain.draining:
        metrics.UPLOADS_DRAINING.inc()
        svc.drain.refuse("upload")
    # Counted from here (no await since the check): a drain that begins now waits for it.
    with svc.drain.upload():
        response = await _create_once(request, svc, caller.tenant_id, idempotency_key)
    if response.status_code == 202:
        metrics.ACCEPT_SECONDS.observe(metrics.since(started))
    return response


async def _create_once(request: Request, svc: Services, tenant: str,
                       idempotency_key: str | None) -> Response:
    if not idempotency_key:
        return await _create(request, svc, tenant, None)
    # Check and mark in one step (no await between): two uploads with one key, one runs.
    # Idempotency-Keys are per tenant.
    mark = (tenant, idempotency_key)
    if mark in svc.uploading:
        raise UploadInFlight("the first upload with this Idempotency-Key is still running")
    svc.uploading.add(mark)
    try:
        return await _create(request, svc, tenant, idempotency_key)
    finally:
        svc.uploading.discard(mark)


async def _create(request: Request, svc: Services, tenant: str,
                  idempotency_key: str | None) -> Response:
    settings = svc.settings
    previous: Job | None = None
    if idempotency_key:
        previous = await to_thread.run_sync(svc.store.jobs.by_idempotency_key, tenant,
                                            idempotency_key)
    if is_url_import(request):
        return await create_from_url(request, svc, tenant, idempotency_key, previous)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Problem(400, "bad_request", "Content-Length is not a number")
        # Multipart framing adds a little; anything beyond that slack is over the limit.
        if int(length) > settings.max_upload_bytes + 64 * 1024:
            raise Problem(413, "too_large",
                          f"the upload is larger than {settings.max_upload_bytes} bytes")
    # Refused before a byte is read: no room for the body (as declared), or below the floor.
    await check_room(svc, int(length) if length else 0)
    content_type = request.headers.get("content-type", "application/octet-stream")
    multipart = content_type.lower().startswith("multipart/form-data")
    # The tenant's quotas, from the headers: a job slot, and Content-Length against the byte
    # quotas; the body is then read against what is left of them (budget). A replay of an
    # Idempotency-Key creates nothing: it is not refused for a full quota.
    budget = None
    if previous is None:
        budget = await svc.quotas.admit_upload(tenant, int(length) if length else None,
                                               multipart)
    query = dict(request.query_params)
    params: JobParams | None = None
    early = _EarlyCheck(svc)
    if not multipart:
        if _no_body(request, query):
            raise NoFile("the request has no body: send the file as the body (with a filename) "
                         "or as a multipart part named `file`")
        # Raw body: all parameters are known before a byte is read, so refuse early.
        params = parse_params(query)
        pipeline, options = _validate(svc, params)
        await early.webhook(params.webhook_url)
        if previous is not None:
            _same_request(previous, pipeline, options, size=int(length) if length else None)
    elif query:
        raise BadParameter("multipart uploads take parameters as form fields")

    job_id = str(ULID())
    writer = await svc.storage.open_writer(input_key(job_id))
    try:
        try:
            if multipart:
                got = await receive_multipart(request.stream(), content_type, writer,
                                              settings.max_upload_bytes, early, budget)
            else:
                got = await receive_raw(request.stream(), writer, settings.max_upload_bytes,
                                        budget)
                got.filename = query.get("filename") or parse_content_disposition_filename(
                    request.headers.get("content-disposition")
                )
                declared = content_type.split(";")[0].strip()
                got.declared_type = declared if declared else None
        except ClientDisconnect:
            metrics.UPLOADS_DISCONNECTED.inc()
            raise UploadAborted("the client disconnected mid-upload") from None
        if params is None:
            params = parse_params(got.fields)
            await early.webhook(params.webhook_url)
        pipeline, options = _validate(svc, params)
        if previous is not None:
            # The same request again: answer the first job, keep nothing of this one.
            _same_request(previous, pipeline, options, got.sha256)
            await writer.abort()
            return JSONResponse(job_view(previous), status_code=200,
                                headers={"Location": f"/v1/jobs/{previous.id}"})
        job, created = await _commit(svc, job_id, writer, got, params, pipeline, options,
                                     tenant, idempotency_key)
        if not created:
            # Another process committed this key first; _commit removed our copy.
            _same_request(job, pipeline, options, got.sha256)
    except BaseException:
        with CancelScope(shield=True):
            await writer.abort()
        raise
    if created:
        metrics.UPLOADS_ACCEPTED.inc()
        metrics.UPLOAD_BYTES.inc(got.size)
    return JSONResponse(job_view(job), status_code=202 if created else 200,
                        headers={"Location": f"/v1/jobs/{job.id}"})


async def _commit(
    svc: Services, job_id: str, writer: Writer, got: Received, params: JobParams,
    pipeline: str, options: Any, tenant: str, idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Complete the input (durable and visible), commit the job row: only then answer 202.

    With ``reuse``, the row is committed already succeeded when ``tenant_id`` has a matching
    result (:mod:`conveyor.store.reuse`); the uploaded bytes are kept as this job's input.
    """
    key = input_key(job_id)
    filename = clean_filename(got.filename)
    media_type = sniff(got.head, filename, got.declared_type)
    # Shielded: once the bytes are complete, the job row or the removal of the bytes must
    # happen, whatever the client does meanwhile.
    with CancelScope(shield=True):
        await writer.complete()
        new = NewJob(
            id=job_id,
            pipeline=pipeline,
            options=options,
            input_key=key,
            input_filename=filename,
            input_size=got.size,
            input_sha256=got.sha256,
            media_type=media_type,
            declared_type=got.declared_type,
            priority=params.priority,
            max_attempts=params.max_attempts or svc.settings.max_attempts,
            timeout_s=params.timeout_s or svc.settings.job_timeout_s,
            webhook_url=params.webhook_url,
            idempotency_key=idempotency_key,
            tenant_id=tenant,
            processor_version=svc.registry.version(pipeline),
        )
        try:
            if params.reuse:
                job, created, reused_from = await to_thread.run_sync(
                    svc.store.reuse.create, new, tenant)
                if reused_from is not None:
                    metrics.JOBS_REUSED.inc()
            else:
                job, created = await svc.commits.create(new)
        except BaseException:
            await svc.storage.delete(key)
            raise
        if not created:  # another upload with this Idempotency-Key won the race
            await svc.storage.delete(key)
    return job, created




@router.get("/jobs", response_model=JobPage, responses={s: problem_schema() for s in (401, 403)},
            summary="List jobs, newest first")
async def list_jobs(
    svc: Svc,
    caller: CanRead,
    state: Annotated[JobState | None, Query()] = None,
    pipeline: Annotated[str | None, Query(max_length=100)] = None,
    parent_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    tenant: Annotated[str | None, Query(max_length=64, description=TENANT_DOC)] = None,
) -> dict[str, Any]:
    listed = caller.tenant_filter(tenant)
    items, next_cursor = await to_thread.run_sync(
        lambda: svc.store.jobs.list(
            state=state.value if state else None, pipeline=pipeline, parent_id=parent_id,
            limit=limit, cursor=cursor, tenant_id=listed,
        )
    )
    return {"items": [job_view(j) for j in items], "next_cursor": next_cursor}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, summary="Get a job")
async def get_job(job_id: str, svc: Svc, caller: CanRead) -> dict[str, Any]:
    job = await to_thread.run_sync(svc.load_job, job_id, caller)
    return job_view(job)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={202: {"description": "the job is running and is being stopped"}, **_ERRORS},
    summary="Cancel a job",
)
async def cancel_job(job_id: str, svc: Svc, caller: CanWrite) -> Response:
    await to_thread.run_sync(svc.load_job, job_id, caller)
    state = await to_thread.run_sync(svc.store.jobs.request_cancel, job_id)
    job = await to_thread.run_sync(svc.load_job, job_id)
    return JSONResponse(job_view(job), status_code=200 if state is JobState.CANCELLED else 202)


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=JobOut, responses=_ERRORS,
             summary="Run a failed or cancelled job again")
async def retry_job(job_id: str, svc: Svc, caller: CanWrite) -> dict[str, Any]:
    await to_thread.run_sync(svc.load_job, job_id, caller)
    await to_thread.run_sync(svc.store.jobs.retry, job_id)
    return job_view(await to_thread.run_sync(svc.load_job, job_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=_ERRORS,
               summary="Delete a job, its input and its artifacts")
async def delete_job(job_id: str, svc: Svc, caller: CanWrite) -> Response:
    await to_thread.run_sync(svc.load_job, job_id, caller)
    await remove_job_data(svc.store, svc.storage, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/deliveries", response_model=list[DeliveryOut], responses=_ERRORS,
            summary="Webhook delivery attempts for a job")
async def list_deliveries(job_id: str, svc: Svc, caller: CanRead) -> list[dict[str, Any]]:
    await to_thread.run_sync(svc.load_job, job_id, caller)
    rows = await to_thread.run_sync(svc.store.outbox.deliveries, job_id)
    return [
        {
            "msg_id": r.msg_id,
            "event_type": r.event_type,
            "attempt": r.attempt,
            "at": iso(r.at),
            "url": r.url,
            "status_code": r.status_code,
            "error": r.error,
            "duration_ms": r.duration_ms,
            "outcome": r.outcome,
        }
        for r in rows
    ]
