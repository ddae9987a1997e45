"""Interop with the official Python client (tuspy): upload, pause, resume; on both backends."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
from tusclient import client as tus_client

from tests.conftest import Server
from tests.uploads.conftest import TUS


def test_tuspy_pause_and_resume(server_factory: Callable[..., Server],
                                backend_env: dict[str, str], tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1", **backend_env)
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    tus = tus_client.TusClient(srv.url + "/v1/uploads")
    # (file_stream, not file_path: tuspy leaves the files it opens open.)
    with open(source, "rb") as stream:
        first = tus.uploader(file_stream=stream, chunk_size=512 * 1024, upload_checksum=True,
                             metadata={"filename": "big.bin", "pipeline": "probe",
                                       "options": "{}", "priority": "5"})
        first.upload(stop_at=1024 * 1024)  # pause after two chunks
    assert first.url is not None
    paused = int(httpx.head(first.url, headers=TUS).headers["Upload-Offset"])
    assert paused == 1024 * 1024
    # A new client resumes from the URL alone (it asks the server for the offset).
    with open(source, "rb") as stream:
        resumed = tus.uploader(file_stream=stream, url=first.url, chunk_size=700 * 1024,
                               upload_checksum=True)
        assert resumed.offset == paused
        resumed.upload()
    head = httpx.head(first.url, headers=TUS)
    job = srv.wait_state(head.headers["Conveyor-Job-Id"])
    assert job["state"] == "succeeded", job
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert job["input"]["size"] == len(data)  # type: ignore[index]
    assert job["priority"] == 5
    # The input and nothing else: on S3 the object made of the upload's chunks (which are
    # gone), on local storage the staged file moved into place.
    stored = {k: v for k, v in srv.stored().items() if not k.startswith("artifacts/")}
    [key] = stored
    assert stored[key] == data
    if srv.s3_prefix is None:
        assert key == f"inputs/{job['id']}"
    else:
        assert key.startswith(f"chunks/{job['id']}/input-")
    assert not list((srv.data_dir / "uploads").glob("*.bin"))
