"""Fixtures of the tus tests: a server with small limits, and request helpers."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BACKENDS, Server, module_server, storage_env

LIMIT = 4 * 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module", params=BACKENDS)
def tus_api(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per storage backend for a module of tus request/response tests (upload
    limit 4 MiB): the uploads are staged on its disk, or chunks on S3."""
    yield from module_server(tmp_path_factory, f"tus-{request.param}", CONVEYOR_WORKERS="1",
                             CONVEYOR_MAX_UPLOAD_BYTES=str(LIMIT), **storage_env(request))


def staged(srv: Server) -> dict[str, bytes]:
    """The bytes of unfinished uploads: staged files on local storage, chunks on S3."""
    if srv.s3_prefix is not None:
        return srv.stored("chunks/")
    return {p.name: p.read_bytes() for p in (srv.data_dir / "uploads").glob("*.bin")}


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def create(client: httpx.Client, length: int, **meta: str) -> str:
    """POST /v1/uploads; the upload's path."""
    headers = {**TUS, "Upload-Length": str(length)}
    if meta:
        headers["Upload-Metadata"] = metadata(**meta)
    r = client.post("/v1/uploads", headers=headers)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def patch(client: httpx.Client, path: str, offset: int, data: bytes,
          **headers: str) -> httpx.Response:
    return client.patch(path, content=data,
                        headers={**OCTETS, "Upload-Offset": str(offset), **headers})


def offset_of(client: httpx.Client, path: str) -> int:
    r = client.head(path, headers=TUS)
    assert r.status_code == 200, r.status_code
    return int(r.headers["Upload-Offset"])
