"""tus 1.0.0 resumable uploads at ``/v1/uploads`` (API.md, "Resumable uploads").

Routes validate and delegate to :class:`conveyor.uploads.service.TusUploads`; the tus
header rules are in :mod:`conveyor.uploads.protocol`, the shared headers (``Tus-Resumable``,
``X-HTTP-Method-Override``, 412) in :mod:`conveyor.api.tus_headers`.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response

from conveyor.api.room import check_room
from conveyor.api.services import Services, services
from conveyor.auth import CanWrite
from conveyor.errors import BadWebhookUrl, TooLarge, TusError
from conveyor.ingest.params import FIELDS, parse_params
from conveyor.problems import problem_schema
from conveyor.store.uploads import DONE, RECEIVING, Upload
from conveyor.uploads import protocol
from conveyor.uploads.service import TusUploads
from conveyor.webhooks.ssrf import AllowList, UnsafeUrl, check_url

router = APIRouter(prefix="/v1", tags=["uploads"])
Svc = Annotated[Services, Depends(services)]

#: Upload-Metadata keys that are job parameters (the same as ``POST /v1/jobs`` takes).
JOB_KEYS = tuple(name for name in FIELDS if name != "filename")

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: problem_schema() for s in (400, 404, 409, 410, 412, 413, 415, 422, 423, 460, 503, 507)}
_TUS_HEADER = {"Tus-Resumable": {"description": "always 1.0.0", "schema": {"type": "string"}}}


def _header(name: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema}


_VERSION = _header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]})
_OCTETS = {"content": {"application/offset+octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}
_POST_DOC = {"parameters": [
    _VERSION, _header("Upload-Length", {"type": "integer", "minimum": 0}),
    _header("Upload-Metadata", {"type": "string"}, required=False)],
    "requestBody": {**_OCTETS, "required": False}}
_PATCH_DOC = {"parameters": [
    _VERSION, _header("Upload-Offset", {"type": "integer", "minimum": 0}),
    _header("Upload-Checksum", {"type": "string"}, required=False)],
    "requestBody": {**_OCTETS, "required": True}}
_VERSION_DOC = {"parameters": [_VERSION]}


async def tus(request: Request) -> TusUploads:  # async: no worker-thread hop per request
    found: Any = request.app.state.tus
    return found  # type: ignore[no-any-return]


Tus = Annotated[TusUploads, Depends(tus)]


def _upload_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
               "Cache-Control": "no-store"}
    if upload.state == RECEIVING:
        headers["Upload-Expires"] = protocol.http_date(upload.expires_at)
    if upload.state == DONE:
        headers["Conveyor-Job-Id"] = upload.job_id
        headers["Link"] = f'</v1/jobs/{upload.job_id}>; rel="job"'
    return headers


async def _job_params(svc: Services, meta: dict[str, str]) -> dict[str, Any]:
    """The job's parameters from Upload-Metadata, checked as ``POST /v1/jobs`` checks them.

    Keys that are neither parameters nor ``filename``/``filetype`` are ignored: clients add
    their own (Uppy sends ``name``, ``type``, ``relativePath``)."""
    params = parse_params({k: meta[k] for k in JOB_KEYS if k in meta})
    options = svc.registry.validate(params.pipeline, params.options)
    if params.webhook_url is not None:
        url = params.webhook_url
        allow = AllowList.parse(svc.settings.webhook_allow_private)
        try:
            await to_thread.run_sync(lambda: check_url(url, allow=allow))
        except UnsafeUrl as exc:
            raise BadWebhookUrl(str(exc)) from None
    return {
        "filename": meta.get("filename") or meta.get("name"),
        "declared_type": (meta.get("filetype") or meta.get("type") or "").strip()[:200] or None,
        "pipeline": params.pipeline, "options": options, "webhook_url": params.webhook_url,
        "priority": params.priority, "max_attempts": params.max_attempts,
        "timeout_s": params.timeout_s,
    }


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.strip().isdigit() else None


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or bool(_content_length(request))


def _check_fits(request: Request, offset: int, length: int) -> None:
    size = _content_length(request)
    if size is not None and offset + size > length:
        raise TooLarge(f"the PATCH body ({size} bytes at {offset}) goes past Upload-Length "
                       f"({length} bytes): nothing was appended")


def _capabilities(svc: Services) -> dict[str, str]:
    return {"Tus-Version": protocol.VERSION, "Tus-Extension": protocol.EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(protocol.ALGORITHMS),
            "Tus-Max-Size": str(svc.settings.max_upload_bytes)}


@router.options("/uploads", status_code=204, response_class=Response,
                summary="tus: what this server supports",
                responses={204: {"headers": _TUS_HEADER}})
async def upload_options(svc: Svc, _caller: CanWrite) -> Response:
    return Response(status_code=204, headers=_capabilities(svc))


@router.options("/uploads/{upload_id}", status_code=204, include_in_schema=False)
async def upload_options_one(svc: Svc, _caller: CanWrite) -> Response:
    return Response(status_code=204, headers=_capabilities(svc))


@router.post(
    "/uploads", status_code=201, response_class=Response,
    responses={201: {"headers": _TUS_HEADER}, **_ERRORS},
    summary="tus: create an upload (creation, creation-with-upload)", openapi_extra=_POST_DOC,
    description="Headers: `Tus-Resumable: 1.0.0`, `Upload-Length`, `Upload-Metadata` "
    "(`filename`, `filetype`, and the job parameters of `POST /v1/jobs`: `pipeline`, "
    "`options` as JSON, `webhook_url`, `priority`, `max_attempts`, `timeout_s`; checked "
    "here, before any byte). With `Content-Type: application/offset+octet-stream` the body "
    "is the first chunk. Answers `Location: /v1/uploads/{id}` and `Upload-Expires`.",
)
async def create_upload(request: Request, svc: Svc, uploads: Tus, caller: CanWrite) -> Response:
    svc.drain.refuse("upload")
    if "upload-defer-length" in request.headers:
        raise TusError("Upload-Defer-Length is not supported: send Upload-Length")
    length = protocol.parse_int("Upload-Length", request.headers.get("upload-length"))
    if length > svc.settings.max_upload_bytes:
        raise TooLarge(f"Upload-Length is over Tus-Max-Size ({svc.settings.max_upload_bytes})")
    # The tenant's quotas (max_queued, max_upload_bytes, bytes_per_day, storage_bytes) against
    # Upload-Length, before any byte: 429 quota_exceeded / 413 too_large.
    await svc.quotas.admit_upload(caller.tenant_id, length, multipart=False)
    with_body = _has_body(request)
    checksum = None
    if with_body:
        protocol.check_content_type(request.headers.get("content-type"))
        _check_fits(request, 0, length)
        checksum = protocol.parse_checksum(request.headers.get("upload-checksum"))
    metadata = request.headers.get("upload-metadata", "")
    params = await _job_params(svc, protocol.parse_metadata(metadata))
    await check_room(svc, length)
    upload = await uploads.create(tenant_id=caller.tenant_id, length=length,
                                  metadata=metadata.strip(), params=params)
    if with_body and upload.length > 0:
        with svc.drain.upload():
            upload, _cut = await uploads.patch(upload.id, 0, request.stream(), checksum)
    headers = _upload_headers(upload)
    headers["Location"] = f"/v1/uploads/{upload.id}"
    del headers["Cache-Control"], headers["Upload-Length"]
    if not with_body:
        del headers["Upload-Offset"]
    return Response(status_code=201, headers=headers)


@router.api_route(
    "/uploads/{upload_id}", methods=["HEAD"], status_code=200, response_class=Response,
    responses={200: {"headers": _TUS_HEADER}, **_ERRORS},
    summary="tus: the upload's offset (and its job, once complete)", openapi_extra=_VERSION_DOC,
)
async def head_upload(upload_id: str, uploads: Tus, caller: CanWrite) -> Response:
    upload = await uploads.head(upload_id, caller.tenant_id)
    headers = _upload_headers(upload)
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    return Response(status_code=200, headers=headers)


@router.patch(
    "/uploads/{upload_id}", status_code=204, response_class=Response,
    responses={204: {"headers": _TUS_HEADER}, **_ERRORS},
    summary="tus: append bytes at Upload-Offset", openapi_extra=_PATCH_DOC,
    description="`Content-Type: application/offset+octet-stream`, `Upload-Offset`, optional "
    "`Upload-Checksum: sha256|sha1|md5 <base64>`. 204 with the new (durable) `Upload-Offset`; "
    "the last one also `Conveyor-Job-Id` and `Link: </v1/jobs/{id}>; rel=\"job\"`. 409 "
    "offset mismatch, 460 checksum mismatch (nothing appended), 423 another request is "
    "writing this upload.",
)
async def patch_upload(upload_id: str, request: Request, svc: Svc, uploads: Tus,
                       caller: CanWrite) -> Response:
    protocol.check_content_type(request.headers.get("content-type"))
    offset = protocol.parse_int("Upload-Offset", request.headers.get("upload-offset"))
    checksum = protocol.parse_checksum(request.headers.get("upload-checksum"))
    svc.drain.refuse("upload")
    with svc.drain.upload():
        current = await uploads.load(upload_id, caller.tenant_id)
        _check_fits(request, offset, current.length)
        upload, _cut = await uploads.patch(upload_id, offset, request.stream(), checksum)
    headers = _upload_headers(upload)
    del headers["Cache-Control"], headers["Upload-Length"]
    return Response(status_code=204, headers=headers)


@router.delete("/uploads/{upload_id}", status_code=204, response_class=Response,
               responses={204: {"headers": _TUS_HEADER}, **_ERRORS},
               summary="tus: terminate an upload (its bytes are removed)",
               openapi_extra=_VERSION_DOC)
async def delete_upload(upload_id: str, uploads: Tus, caller: CanWrite) -> Response:
    await uploads.terminate(upload_id, caller.tenant_id)
    return Response(status_code=204)


