"""The job routes: create (streamed upload), read, list, cancel, retry, delete.

Downloads are in :mod:`conveyor.api.downloads`.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import CancelScope, to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from ulid import ULID

from conveyor.api.maintenance import remove_job_data
from conveyor.api.services import Services, services
from conveyor.api.views import DeliveryOut, JobOut, JobPage, iso, job_view
from conveyor.errors import JobConflict, JobNotFound
from conveyor.ingest.params import (
    JobParams,
    clean_filename,
    parse_content_disposition_filename,
    parse_params,
)
from conveyor.ingest.stream import Received, receive_multipart, receive_raw
from conveyor.models import JobState
from conveyor.problems import Problem, problem_schema
from conveyor.processors.registry import BadOptions, UnknownPipeline
from conveyor.processors.sniff import sniff
from conveyor.storage import Writer, input_key
from conveyor.store import NewJob
from conveyor.webhooks.ssrf import AllowList, UnsafeUrl, check_url

router = APIRouter(prefix="/v1", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: problem_schema() for s in (400, 404, 409, 410, 413, 422)
}

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "pipeline": {"type": "string", "default": "auto"},
                        "options": {"type": "string", "description": "a JSON object"},
                        "webhook_url": {"type": "string"},
                        "priority": {"type": "integer"},
                        "max_attempts": {"type": "integer"},
                        "timeout_s": {"type": "number"},
                    },
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "Any non-multipart body is the file itself; parameters go in "
                "the query string (pipeline, options, webhook_url, priority, max_attempts, "
                "timeout_s, filename).",
            },
        },
    }
}


def _validate(svc: Services, params: JobParams) -> tuple[str, Any]:
    try:
        options = svc.registry.validate(params.pipeline, params.options)
    except UnknownPipeline as exc:
        raise Problem(422, "unknown_pipeline", str(exc)) from None
    except BadOptions as exc:
        raise Problem(422, "bad_options", str(exc), errors=exc.errors) from None
    return params.pipeline, options


async def _check_webhook(svc: Services, url: str | None) -> None:
    if url is None:
        return
    allow = AllowList.parse(svc.settings.webhook_allow_private)
    try:
        await to_thread.run_sync(lambda: check_url(url, allow=allow))
    except UnsafeUrl as exc:
        raise Problem(422, "bad_webhook_url", str(exc)) from None


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    responses={200: {"description": "the job created earlier with this Idempotency-Key"},
               **_ERRORS},
    openapi_extra=_UPLOAD_DOC,
    summary="Upload a file and create a job",
)
async def create_job(
    request: Request,
    svc: Svc,
    idempotency_key: Annotated[str | None, Header(max_length=300)] = None,
) -> Response:
    settings = svc.settings
    if idempotency_key:
        existing = await to_thread.run_sync(svc.store.find_by_idempotency_key, idempotency_key)
        if existing is not None:
            return JSONResponse(job_view(existing), status_code=200)
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Problem(400, "bad_request", "Content-Length is not a number")
        # Multipart framing adds a little; anything beyond that slack is over the limit.
        if int(length) > settings.max_upload_bytes + 64 * 1024:
            raise Problem(413, "too_large",
                          f"the upload is larger than {settings.max_upload_bytes} bytes")
    content_type = request.headers.get("content-type", "application/octet-stream")
    multipart = content_type.lower().startswith("multipart/form-data")
    query = dict(request.query_params)
    params: JobParams | None = None
    if not multipart:
        # Raw body: all parameters are known before a byte is read, so refuse early.
        params = parse_params(query)
        _validate(svc, params)
        await _check_webhook(svc, params.webhook_url)
    elif query:
        raise Problem(422, "bad_parameter", "multipart uploads take parameters as form fields")

    # The job id, hence the storage key, is chosen before the first byte is read: an object
    # store has no rename, so the bytes go straight to their final key.
    job_id = str(ULID())
    writer = await svc.storage.open_writer(input_key(job_id))
    try:
        try:
            if multipart:
                got = await receive_multipart(request.stream(), content_type, writer,
                                              settings.max_upload_bytes)
            else:
                got = await receive_raw(request.stream(), writer, settings.max_upload_bytes)
                got.filename = query.get("filename") or parse_content_disposition_filename(
                    request.headers.get("content-disposition")
                )
                declared = content_type.split(";")[0].strip()
                got.declared_type = declared if declared else None
        except ClientDisconnect:
            svc.count("uploads_disconnected")
            raise Problem(400, "bad_request", "the client disconnected mid-upload") from None
        if params is None:
            params = parse_params(got.fields)
            await _check_webhook(svc, params.webhook_url)
        pipeline, options = _validate(svc, params)
        job = await _commit(svc, job_id, writer, got, params, pipeline, options,
                            idempotency_key)
    except BaseException:
        with CancelScope(shield=True):
            await writer.abort()
        raise
    status = 202 if job is not None and job.get("_created") else 200
    job.pop("_created", None)
    svc.count("uploads_accepted")
    svc.count("upload_bytes", got.size)
    return JSONResponse(job, status_code=status, headers={"Location": f"/v1/jobs/{job['id']}"})


async def _commit(
    svc: Services, job_id: str, writer: Writer, got: Received, params: JobParams,
    pipeline: str, options: Any, idempotency_key: str | None,
) -> dict[str, Any]:
    """Complete the input (durable and visible), commit the job row: only then answer 202."""
    key = input_key(job_id)
    filename = clean_filename(got.filename)
    media_type = sniff(got.head, filename)
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
        )
        try:
            job, created = await to_thread.run_sync(svc.store.create_job, new)
        except BaseException:
            await svc.storage.delete(key)
            raise
        if not created:  # another upload with this Idempotency-Key won the race
            await svc.storage.delete(key)
    view = job_view(job)
    view["_created"] = created
    return view


@router.get("/jobs", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    svc: Svc,
    state: Annotated[JobState | None, Query()] = None,
    pipeline: Annotated[str | None, Query(max_length=100)] = None,
    parent_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    items, next_cursor = await to_thread.run_sync(
        lambda: svc.store.list_jobs(
            state=state.value if state else None, pipeline=pipeline, parent_id=parent_id,
            limit=limit, cursor=cursor,
        )
    )
    return {"items": [job_view(j) for j in items], "next_cursor": next_cursor}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, summary="Get a job")
async def get_job(job_id: str, svc: Svc) -> dict[str, Any]:
    job = await to_thread.run_sync(svc.load_job, job_id)
    return job_view(job)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={202: {"description": "the job is running and is being stopped"}, **_ERRORS},
    summary="Cancel a job",
)
async def cancel_job(job_id: str, svc: Svc) -> Response:
    await to_thread.run_sync(svc.load_job, job_id)
    try:
        state = await to_thread.run_sync(svc.store.request_cancel, job_id)
    except JobNotFound:
        raise Problem(404, "not_found", f"no job {job_id}") from None
    except JobConflict as exc:
        raise Problem(409, "conflict", str(exc)) from None
    job = await to_thread.run_sync(svc.load_job, job_id)
    return JSONResponse(job_view(job), status_code=200 if state is JobState.CANCELLED else 202)


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=JobOut, responses=_ERRORS,
             summary="Run a failed or cancelled job again")
async def retry_job(job_id: str, svc: Svc) -> dict[str, Any]:
    await to_thread.run_sync(svc.load_job, job_id)
    try:
        await to_thread.run_sync(svc.store.retry_job, job_id)
    except JobConflict as exc:
        raise Problem(409, "conflict", str(exc)) from None
    return job_view(await to_thread.run_sync(svc.load_job, job_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=_ERRORS,
               summary="Delete a job, its input and its artifacts")
async def delete_job(job_id: str, svc: Svc) -> Response:
    await to_thread.run_sync(svc.load_job, job_id)
    await remove_job_data(svc.store, svc.storage, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/deliveries", response_model=list[DeliveryOut], responses=_ERRORS,
            summary="Webhook delivery attempts for a job")
async def list_deliveries(job_id: str, svc: Svc) -> list[dict[str, Any]]:
    await to_thread.run_sync(svc.load_job, job_id)
    rows = await to_thread.run_sync(svc.store.deliveries_for, job_id)
    return [
        {
            "msg_id": r["msg_id"],
            "event_type": r["event_type"],
            "attempt": r["attempt"],
            "at": iso(r["at"]),
            "url": r["url"],
            "status_code": r["status_code"],
            "error": r["error"],
            "duration_ms": r["duration_ms"],
            "outcome": r["outcome"],
        }
        for r in rows
    ]



