"""Real faults: the server SIGKILLed mid-PATCH, connections cut mid-body, a crash between the
last byte and the job's commit. Acknowledged offsets survive; the file ends bit-identical."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tusclient import client as tus_client

from tests.conftest import Server
from tests.uploads.conftest import TUS, create, offset_of, patch
from tests.uploads.cutter import Cutter

MiB = 1024 * 1024


def _resume(url: str, source: Path, *, chunk: int, checksum: bool,
            attempts: int = 30) -> int:
    """Upload ``source`` to ``url`` until done, resuming after each failure; the failures."""
    failures = 0
    tus = tus_client.TusClient(url.rsplit("/", 1)[0])
    for _ in range(attempts):
        try:
            with open(source, "rb") as stream:
                up = tus.uploader(file_stream=stream, url=url, chunk_size=chunk,
                                  upload_checksum=checksum)
                up.upload()
            return failures
        except Exception:
            failures += 1
            time.sleep(0.2)  # the server may still be saving what the cut request sent
    raise AssertionError(f"upload did not finish after {attempts} attempts")


def test_sigkill_mid_patch(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = os.urandom(16 * MiB)
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    with srv.client() as c:
        path = create(c, len(data), filename="f.bin")
        acked = 2 * MiB
        assert patch(c, path, 0, data[:acked]).status_code == 204
    # A PATCH that sends 6 MiB of its 14, then the server dies.
    sent = acked
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {acked}\r\n"
                f"Content-Length: {len(data) - acked}\r\n\r\n")
        sock.sendall(head.encode())
        for start in range(acked, acked + 6 * MiB, MiB):
            sock.sendall(data[start:start + MiB])
            sent += MiB
        time.sleep(0.5)
        srv.kill()
    srv.start()
    with srv.client() as c:
        after = offset_of(c, path)
    assert acked <= after <= sent
    assert _resume(srv.url + path, source, chunk=4 * MiB, checksum=True) == 0
    with srv.client() as c:
        job_id = c.head(path, headers=TUS).headers["Conveyor-Job-Id"]
    job = srv.wait_state(job_id)
    assert job["state"] == "succeeded"
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]


def test_connections_cut_mid_body(server_factory: Callable[..., Server],
                                  tmp_path: Path) -> None:
    """Each of the first four connections is cut at some byte: what arrived is kept (no
    checksum), the client resumes from HEAD, the input is bit-identical."""
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = os.urandom(8 * MiB + 123)
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    with srv.client() as c:
        path = create(c, len(data), filename="f.bin")
    # Connection 0 is the PATCH (the HEADs of resumes take their own connections).
    cuts = [1_234_567, 500, 2_345_678, 10, 3_000_001, 77, 1_999_999]
    with Cutter(srv.port, cuts) as cutter:
        failures = _resume(f"http://127.0.0.1:{cutter.port}{path}", source,
                           chunk=len(data), checksum=False)
        assert cutter.cut >= 3
    assert failures >= 3
    with srv.client() as c:
        job_id = c.head(path, headers=TUS).headers["Conveyor-Job-Id"]
        job = srv.wait_state(job_id)
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert c.get(f"/v1/jobs/{job_id}/input").content == data


def test_crash_before_the_job_commit(server_factory: Callable[..., Server]) -> None:
    """Every byte is durable but the job was never committed (a crash between the two):
    the next start commits it, exactly once; a HEAD does the same on a running server."""
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = b"0123456789" * 1000
    with srv.client() as c:
        paths = [create(c, len(data), filename=f"{i}.txt") for i in range(2)]
        for path in paths:
            assert patch(c, path, 0, data[:5000]).status_code == 204
    srv.kill()
    db = sqlite3.connect(srv.data_dir / "conveyor.db")
    for path in paths:  # what the crashed server had done: the bytes, and their offset
        upload_id = path.rsplit("/", 1)[1]
        with open(srv.data_dir / "uploads" / f"{upload_id}.bin", "ab") as fh:
            fh.write(data[5000:])
        db.execute("UPDATE uploads SET upload_offset = length WHERE id = ?", (upload_id,))
    db.commit()
    db.close()
    srv.start()
    with srv.client() as c:
        jobs = [c.head(p, headers=TUS).headers["Conveyor-Job-Id"] for p in paths]
        for job_id in jobs:
            job = srv.wait_state(job_id)
            assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        listed = c.get("/v1/jobs", params={"limit": 500}).json()["items"]
    assert sorted(j["id"] for j in listed) == sorted(jobs)
    assert not list((srv.data_dir / "uploads").glob("*.bin"))
    # Later HEADs find the same job.
    assert httpx.head(srv.url + paths[0], headers=TUS).headers["Conveyor-Job-Id"] == jobs[0]
