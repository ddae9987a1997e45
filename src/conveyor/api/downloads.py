"""Downloads of inputs and artifacts, streamed from storage: ETag, 304, one Range, HEAD.

The bytes come through the storage protocol (no local path), so any backend serves them.
Range handling is in :mod:`conveyor.api.ranges`: a malformed Range header is ignored (200
with the whole file), a range past the end is a 416 problem with ``Content-Range: bytes */N``.
``HEAD`` answers with the headers of a ``GET`` and no body (it ignores Range, as RFC 9110 says).
With ``CONVEYOR_DOWNLOADS=redirect`` on S3, both answer 307 to a short-lived presigned URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from conveyor.api.ranges import RangeNotSatisfiable, parse_range
from conveyor.api.services import Services, services
from conveyor.auth import CanRead
from conveyor.problems import Problem, problem_response, problem_schema
from conveyor.storage import ByteStream, NotFound, PresignUnsupported
from conveyor.telemetry import metrics

router = APIRouter(prefix="/v1", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]

_FILE = {"schema": {"type": "string", "format": "binary"}}
#: An artifact's bytes have its own media type (JSON, WebP, CSV...), so no one schema fits.
_ANY = {"schema": {"description": "the artifact's bytes, served with its media type"}}


def _responses(media_type: str, body: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": "the whole file", "content": {media_type: body}},
        206: {"description": "the byte range asked for with `Range: bytes=...` "
              "(see `Content-Range`)", "content": {media_type: body}},
        304: {"description": "`If-None-Match` matched the ETag (the file's quoted sha256)"},
        307: {"description": "`CONVEYOR_DOWNLOADS=redirect` (S3): a presigned URL of the "
              "object"},
        **{s: problem_schema() for s in (400, 401, 403, 404, 410, 503)},
        416: {**problem_schema(), "description": "the range starts past the end of the file "
              "(`Content-Range: bytes */size`); a malformed Range header is ignored instead"},
    }


#: An input is served as octet-stream; an artifact with its own media type (``*/*``).
_INPUT_RESPONSES = _responses("application/octet-stream", _FILE)
_ARTIFACT_RESPONSES = _responses("*/*", _ANY)
#: Types a browser would run stay downloadable but never active.
_ACTIVE = ("text/html", "image/svg+xml", "application/xhtml+xml")


def _disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


#: Lifetime of a presigned download URL (``CONVEYOR_DOWNLOADS=redirect``).
PRESIGN_S = 300


async def _send(
    request: Request, svc: Services, key: str, sha256: str, media_type: str, filename: str
) -> Response:
    if svc.settings.downloads == "redirect":
        try:
            url = await svc.storage.presign(key, PRESIGN_S)
        except PresignUnsupported:
            pass  # local storage: proxy as usual
        else:
            # The object store answers from here on: no ETag = sha256, nosniff or CSP sandbox.
            return RedirectResponse(url, status_code=307,
                                    headers={"Cache-Control": "private, no-store"})
    info = await svc.storage.stat(key)
    if info is None:
        raise Problem(410, "gone", "the file is no longer stored")
    size = info.size
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": _disposition(filename),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Content-Security-Policy": "sandbox",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(size)}, media_type=media_type)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # the client's copy is stale: send the whole new file
    try:
        rng = parse_range(wanted, size)
    except RangeNotSatisfiable as exc:
        return problem_response(416, "range_not_satisfiable", str(exc),
                                headers={"Content-Range": f"bytes */{size}",
                                         "Accept-Ranges": "bytes"})
    start, end = (rng.start, rng.end) if rng else (0, size)
    try:
        stream = await svc.storage.read(key, start, end)
    except NotFound:
        raise Problem(410, "gone", "the file is no longer stored") from None
    headers["Content-Length"] = str(end - start)
    if rng is not None:
        headers["Content-Range"] = rng.content_range(size)
    return StreamingResponse(_counted(stream), status_code=206 if rng else 200,
                             headers=headers, media_type=media_type)


async def _counted(stream: ByteStream) -> AsyncIterator[bytes]:
    """The bytes as sent, counted in ``conveyor_download_bytes_total``."""
    try:
        async for chunk in stream:
            yield chunk
            metrics.DOWNLOAD_BYTES.inc(len(chunk))
    finally:
        await stream.aclose()  # a client that went away stops the read early


async def download_input(job_id: str, request: Request, svc: Svc, caller: CanRead) -> Response:
    job = await to_thread.run_sync(svc.load_job, job_id, caller)
    if job.input_pending:
        # A URL import whose bytes no worker has recorded yet (they may be mid-fetch).
        raise Problem(404, "not_found", f"job {job_id}'s input is not fetched yet")
    return await _send(request, svc, job.input_key, job.input_sha256,
                       "application/octet-stream", job.input_filename)


async def download_artifact(job_id: str, name: str, request: Request, svc: Svc,
                            caller: CanRead) -> Response:
    job = await to_thread.run_sync(svc.load_job, job_id, caller)
    for art in job.artifacts:
        if art.name == name:
            media_type = "text/plain" if art.media_type in _ACTIVE else art.media_type
            return await _send(request, svc, art.storage_key, art.sha256, media_type, art.name)
    raise Problem(404, "not_found", f"job {job_id} has no artifact {name!r}")


for _method in ("GET", "HEAD"):
    router.add_api_route(
        "/jobs/{job_id}/input", download_input, methods=[_method], responses=_INPUT_RESPONSES,
        name=f"{_method.lower()}_input", response_class=Response,
        summary="Download the uploaded file" if _method == "GET"
        else "Headers of the uploaded file's download",
    )
    router.add_api_route(
        "/jobs/{job_id}/artifacts/{name}", download_artifact, methods=[_method],
        responses=_ARTIFACT_RESPONSES, name=f"{_method.lower()}_artifact",
        response_class=Response,
        summary="Download an artifact" if _method == "GET" else "Headers of an artifact's download",
    )
