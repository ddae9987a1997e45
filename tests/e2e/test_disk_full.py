"""Full disks end cleanly (issue 17, items 1 and 2), each on a small tmpfs under a real server.

- the files' disk full: 507 ``insufficient_storage`` with ``Retry-After``, up front when the
  Content-Length cannot fit or the free space is below the floor, mid-stream otherwise; nothing
  half-written; ``/readyz`` 503 below the floor; uploads accepted again once there is room;
- the database's disk full: a small upload is 507 too (not a 500), nothing kept;
- a full disk under a running job: a retried attempt failure, the attempt's bytes removed; when
  even the failure cannot be written, no crash loop and no traceback every second, ``/readyz``
  says why, and the job ends once there is room again (its lease ran out: the reaper requeues
  it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.conftest import MiB, Mount, Server, fill


def _free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _leftovers(data: Path) -> list[str]:
    """Files under the storage's temp area and input folder."""
    found = []
    for sub in ("tmp", "inputs"):
        folder = data / "files" / sub
        if folder.is_dir():
            found += [p.name for p in folder.iterdir()]
    return found


def _is_507(resp: httpx.Response) -> dict[str, object]:
    assert resp.status_code == 507, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert int(resp.headers["retry-after"]) > 0
    body: dict[str, object] = resp.json()
    assert body["code"] == "insufficient_storage" and body["status"] == 507
    return body


def _raw(srv: Server, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def _jobs(srv: Server) -> list[dict[str, object]]:
    items: list[dict[str, object]] = httpx.get(f"{srv.url}/v1/jobs", timeout=10).json()["items"]
    return items


def test_full_storage_disk_answers_507_keeps_nothing_and_recovers(
    tmpfs: Mount, server_factory: Callable[..., Server]
) -> None:
    data = tmpfs("data", 40)  # the database lives here too, as by default
    srv = server_factory(data_dir=data, CONVEYOR_WORKERS="1",
                         CONVEYOR_MIN_FREE_BYTES=str(4 * MiB))
    ready = httpx.get(f"{srv.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["free_bytes"]["storage"] > 30 * MiB

    # A declared 60 MB cannot fit: refused before a body byte is read.
    head = (b"POST /v1/jobs?pipeline=probe HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 62914560\r\n\r\n")
    answer = _raw(srv, head)
    assert answer.startswith(b"HTTP/1.1 507"), answer[:300]
    assert b"retry-after: " in answer.lower() and b'"code":"insufficient_storage"' in answer

    # Undeclared (chunked), it fills the disk mid-stream: 507, and the partial file is gone.
    def chunks() -> Iterator[bytes]:
        for _ in range(60):
            yield b"\7" * MiB

    _is_507(httpx.post(f"{srv.url}/v1/jobs?pipeline=probe", content=chunks(), timeout=60))
    assert _leftovers(data) == [] and _jobs(srv) == []
    assert _free(data) > 30 * MiB  # nothing half-written keeps the disk full

    # Below the floor: not ready, and even a small upload is refused up front.
    filler = fill(data, leave=2 * MiB)
    ready = httpx.get(f"{srv.url}/readyz", timeout=10)
    assert ready.status_code == 503, ready.text
    assert ready.json()["code"] == "not_ready"
    assert "CONVEYOR_MIN_FREE_BYTES" in ready.json()["detail"]
    _is_507(httpx.post(f"{srv.url}/v1/jobs?pipeline=probe&filename=a.txt", content=b"x" * 1024,
                       timeout=10))
    assert _leftovers(data) == [] and _jobs(srv) == []

    # Room again: ready, uploads accepted and run.
    filler.unlink()
    assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 200
    resp = httpx.post(f"{srv.url}/v1/jobs?pipeline=probe&filename=a.txt", content=b"x" * 1024,
                      timeout=10)
    assert resp.status_code == 202, resp.text
    assert srv.wait_state(resp.json()["id"])["state"] == "succeeded"


def test_full_database_disk_answers_507_not_500(
    tmpfs: Mount, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    db = tmpfs("db", 8)
    # No floor: the upload must reach the database write and meet the full disk there.
    srv = server_factory(data_dir=tmp_path / "data", CONVEYOR_WORKERS="1",
                         CONVEYOR_MIN_FREE_BYTES="0",
                         CONVEYOR_DATABASE_URL=f"sqlite:///{db}/conveyor.db")
    filler = fill(db)
    for _ in range(3):
        _is_507(httpx.post(f"{srv.url}/v1/jobs?pipeline=probe&filename=a.txt",
                           content=b"x" * 1024, timeout=30))
    assert _leftovers(srv.data_dir) == [] and _jobs(srv) == []
    assert "Traceback" not in srv.log() and "OperationalError" not in srv.log()

    filler.unlink()
    resp = httpx.post(f"{srv.url}/v1/jobs?pipeline=probe&filename=a.txt", content=b"x" * 1024,
                      timeout=30)
    assert resp.status_code == 202, resp.text
    assert srv.wait_state(resp.json()["id"])["state"] == "succeeded"


def _start_fill(srv: Server, gate: Path, **params: str) -> httpx.Response:
    """A job that waits for ``gate``, then writes a 12 MiB artifact."""
    options = json.dumps({"megabytes": 12, "gate": str(gate)})
    return httpx.post(f"{srv.url}/v1/jobs", content=b"x", timeout=10, params={
        "pipeline": "fill", "filename": "a.txt", "options": options, **params})


def _artifact_dirs(data: Path, job_id: str) -> list[str]:
    folder = data / "files" / "artifacts" / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_full_storage_disk_under_a_running_job_is_a_retried_failure(
    tmpfs: Mount, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    data = tmpfs("data", 40)
    srv = server_factory(data_dir=data, CONVEYOR_WORKERS="1", CONVEYOR_MIN_FREE_BYTES="0",
                         CONVEYOR_RETRY_BASE_S="0.2", CONVEYOR_RETRY_MAX_S="0.5",
                         CONVEYOR_DATABASE_URL=f"sqlite:///{tmp_path}/conveyor.db")
    gate = tmp_path / "gate"
    resp = _start_fill(srv, gate, max_attempts="50")
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    srv.wait_state(job_id, ("running",))
    filler = fill(data, leave=1 * MiB)
    gate.touch()
    # The artifact does not fit: each attempt fails with storage_error and is retried.
    deadline = time.monotonic() + 30
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10).json()
        if int(str(job["attempts"])) >= 3:
            break
        time.sleep(0.1)
    assert int(str(job["attempts"])) >= 3, job
    assert job["state"] in ("queued", "running"), job
    error = job["error"]
    assert isinstance(error, dict) and error["code"] == "storage_error", job
    assert error["retryable"] is True and "/" not in str(error["message"])

    filler.unlink()
    job = srv.wait_state(job_id, timeout=60)
    assert job["state"] == "succeeded", job
    # Only the winning attempt's bytes remain; the work dirs of the failed ones are gone.
    assert len(_artifact_dirs(data, job_id)) == 1
    assert not any((data / "work").iterdir()) if (data / "work").is_dir() else True


def test_full_database_disk_at_the_commit_backs_off_and_the_job_ends_once_there_is_room(
    tmpfs: Mount, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    db = tmpfs("db", 8)
    data = tmp_path / "data"
    # No floor: /readyz must tell the full disk from the failing writes themselves.
    srv = server_factory(data_dir=data, CONVEYOR_WORKERS="1", CONVEYOR_MIN_FREE_BYTES="0",
                         CONVEYOR_LEASE_S="2", CONVEYOR_RETRY_BASE_S="0.2",
                         CONVEYOR_DATABASE_URL=f"sqlite:///{db}/conveyor.db")
    gate = tmp_path / "gate"
    resp = _start_fill(srv, gate)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    srv.wait_state(job_id, ("running",))
    filler = fill(db)
    gate.touch()  # the 12 MB artifact is written (other disk); the commit meets the full disk

    # The commit fails and even the failure cannot be written: the job stays `running` (its
    # lease runs out), the supervisor's writes fail quietly, /readyz says why.
    deadline = time.monotonic() + 30
    why = ""
    while time.monotonic() < deadline and "disk is full" not in why:
        ready = httpx.get(f"{srv.url}/readyz", timeout=10)
        if ready.status_code == 503:
            why = str(ready.json()["detail"])
        time.sleep(0.1)
    assert "disk is full" in why, (why, srv.log())
    time.sleep(6)  # several reaper rounds and lease renewals fail meanwhile
    log = srv.log()
    assert "could not record storage_error" in log, log
    assert "Traceback" not in log and "exited with code" not in log, log
    # Once per outage, not once a second: a tick with nothing to write may succeed in between
    # (a busy machine stretches the rounds), and then the next failure is a new outage.
    failed, recovered = log.count("supervisor tick failed"), log.count("supervisor recovered")
    assert 1 <= failed <= recovered + 1 and failed <= 3, log
    job = httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["state"] == "running", job  # nothing could be written: not ended, not lost
    # The attempt's outputs were dropped at the failed commit: they do not keep a disk full.
    assert _artifact_dirs(data, job_id) == []

    filler.unlink()
    # The lease has run out: once the database takes writes, the reaper requeues the job and
    # the worker runs it again.
    job = srv.wait_state(job_id, timeout=60)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2, job
    assert len(_artifact_dirs(data, job_id)) == 1
    ready = httpx.get(f"{srv.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
