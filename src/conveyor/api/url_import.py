"""``POST /v1/jobs`` with a JSON body: a job whose input a worker fetches from a URL.

The answer is 202 at once. The URL passes the SSRF guard here as far as it can without
fetching (scheme, credentials, a literal or resolved address): a refusal is 422
``url_forbidden`` before any job exists. The worker checks it again, and every redirect, when
it fetches (a name may resolve elsewhere by then).
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from ulid import ULID

from conveyor.api.services import Services
from conveyor.api.views import job_view
from conveyor.errors import (
    BadWebhookUrl,
    IdempotencyKeyReused,
    JobGone,
    MalformedBody,
    UploadAborted,
    UrlForbidden,
)
from conveyor.ingest.url_fetch import ALLOW_SETTING
from conveyor.ingest.url_request import MAX_BODY_BYTES, UrlRequest, parse_url_request
from conveyor.storage import input_key
from conveyor.store import Job, NewJob, tombstoned_or_expired
from conveyor.telemetry import metrics
from conveyor.webhooks.ssrf import AllowList, UnsafeUrl, check_url

#: What an unfetched input looks like in the row (the API shows size and sha256 as null).
PENDING_TYPE = "application/octet-stream"


def is_url_import(request: Request) -> bool:
    """A JSON body with no query string: a URL import. A JSON *file* uploaded as a raw body
    names itself in the query string (``?filename=data.json``), so it stays an upload."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" and not request.url.query


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise MalformedBody(f"the JSON body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise MalformedBody(f"the JSON body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise UploadAborted("the client disconnected mid-request") from None
    return b"".join(chunks)


async def _check(svc: Services, req: UrlRequest) -> None:
    allow = AllowList.parse(svc.settings.url_import_allow_private, ALLOW_SETTING)
    try:
        await to_thread.run_sync(lambda: check_url(req.url, allow=allow))
    except UnsafeUrl as exc:
        if exc.reason != "resolve":
            raise UrlForbidden(f"url: {exc}") from None
        # A name that does not resolve now may later: the worker's fetch decides (and
        # retries url_unreachable).
    if req.params.webhook_url is not None:
        hooks = AllowList.parse(svc.settings.webhook_allow_private)
        url = req.params.webhook_url
        try:
            await to_thread.run_sync(lambda: check_url(url, allow=hooks))
        except UnsafeUrl as exc:
            raise BadWebhookUrl(str(exc)) from None


def _same_request(job: Job, req: UrlRequest, pipeline: str, options: Any) -> None:
    if tombstoned_or_expired(job):
        raise JobGone(f"job {job.id}, made with this Idempotency-Key, expired or was deleted")
    if job.input_url != req.url or job.pipeline != pipeline or job.options != options:
        raise IdempotencyKeyReused(
            f"Idempotency-Key was used for job {job.id}, made from a different request")


async def create_from_url(request: Request, svc: Services, tenant: str,
                          idempotency_key: str | None, previous: Job | None) -> Response:
    """Check the body and the URL, commit a queued job that will fetch it; 202 (200 for an
    Idempotency-Key's earlier job)."""
    req = parse_url_request(await _read_body(request))
    pipeline = req.params.pipeline
    options = svc.registry.validate(pipeline, req.params.options)
    await _check(svc, req)
    if previous is not None:
        _same_request(previous, req, pipeline, options)
        return JSONResponse(job_view(previous), status_code=200,
                            headers={"Location": f"/v1/jobs/{previous.id}"})
    job_id = str(ULID())
    new = NewJob(
        id=job_id,
        pipeline=pipeline,
        options=options,
        input_key=input_key(job_id),
        input_filename=req.filename,
        input_size=0,
        input_sha256="",
        media_type=PENDING_TYPE,
        priority=req.params.priority,
        max_attempts=req.params.max_attempts or svc.settings.max_attempts,
        timeout_s=req.params.timeout_s or svc.settings.job_timeout_s,
        webhook_url=req.params.webhook_url,
        idempotency_key=idempotency_key,
        input_url=req.url,
        tenant_id=tenant,
        processor_version=svc.registry.version(pipeline),
    )
    job, created = await to_thread.run_sync(svc.store.jobs.create, new)
    if not created:  # another request with this Idempotency-Key committed first
        _same_request(job, req, pipeline, options)
    else:
        metrics.URL_IMPORTS_ACCEPTED.inc()
    return JSONResponse(job_view(job), status_code=202 if created else 200,
                        headers={"Location": f"/v1/jobs/{job.id}"})
