"""Guarantee 1 end to end: 202 means durable, and a crash leaves no job and no orphan bytes.

On local storage and on S3 (moto): there, uploads in flight are open multipart uploads, and
the sweep of the next start aborts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Server


def _slow_upload(port: int, data: bytes, results: list[int], sent: list[int],
                 index: int) -> None:
    """Send ``data`` 64 KiB every 50 ms, counting body bytes in ``sent[index]``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/jobs?pipeline=probe HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\n"
                + f"Content-Length: {len(data)}\r\n\r\n".encode()
            )
            for i in range(0, len(data), 65536):
                sock.sendall(data[i : i + 65536])
                sent[index] += len(data[i : i + 65536])
                time.sleep(0.05)
            answer = sock.recv(65536)
            results[index] = int(answer.split(b" ", 2)[1]) if answer else -1
    except OSError:
        results[index] = -1


def _holding_bytes(srv: Server) -> int:
    """How many uploads hold at least one byte (a file may vanish meanwhile)."""
    if srv.s3_prefix is not None:
        return len(srv.unfinished())  # multipart uploads begun
    count = 0
    for path in (srv.data_dir / "files" / "tmp").iterdir():
        with contextlib.suppress(FileNotFoundError):
            count += path.stat().st_size > 0
    return count


@pytest.fixture
def backend(backend_env: dict[str, str]) -> dict[str, str]:
    # Small parts on S3 (100 MB limit / 10,000 < 64 KiB): every slow upload opens a multipart
    # upload early; a grace period of 1 s lets the next start sweep what the crash left.
    env = dict(backend_env)
    if env:
        env |= {"CONVEYOR_MAX_UPLOAD_BYTES": str(100 * 1024**2),
                "CONVEYOR_STORAGE_SWEEP_GRACE": "1s"}
    return env


def test_sigkill_with_uploads_in_flight(server_factory: Callable[..., Server],
                                        backend: dict[str, str]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1", **backend)
    acknowledged: dict[str, str] = {}
    for i in range(10):
        data = os.urandom(100_000 + i)
        resp = httpx.post(f"{srv.url}/v1/jobs?pipeline=probe", content=data)
        assert resp.status_code == 202
        acknowledged[resp.json()["id"]] = hashlib.sha256(data).hexdigest()

    size = 2_000_000
    results, sent = [0] * 20, [0] * 20
    threads = [
        threading.Thread(target=_slow_upload, args=(srv.port, os.urandom(size), results, sent, i))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    # Kill only once the uploads are really in flight: the server holds bytes of most of them
    # in temp files, and no client has sent its whole body yet.
    deadline = time.monotonic() + 10
    receiving = 0
    while time.monotonic() < deadline:
        receiving = _holding_bytes(srv)
        if receiving >= 10 and min(sent) > 0:
            break
        time.sleep(0.02)
    sent_at_kill = list(sent)
    srv.kill()  # the server, its workers, everything in its session
    assert receiving >= 10, f"only {receiving} uploads reached the server before the kill"
    assert all(0 < n < size for n in sent_at_kill), sent_at_kill  # all mid-body at the kill
    for thread in threads:
        thread.join(15)
    assert all(code != 202 for code in results), results  # none of them was acknowledged

    time.sleep(1.1 if backend else 0)  # past the grace period of the sweep
    again = server_factory(data_dir=srv.data_dir, CONVEYOR_WORKERS="1", **backend)
    listed = httpx.get(f"{again.url}/v1/jobs", params={"limit": 500}).json()["items"]
    assert {j["id"] for j in listed} == set(acknowledged)
    stored = again.stored("inputs/")
    for job in listed:
        assert job["input"]["sha256"] == acknowledged[job["id"]]
        data = stored[f"inputs/{job['id']}"]
        assert hashlib.sha256(data).hexdigest() == acknowledged[job["id"]]
    assert again.unfinished() == []  # no temp file, no multipart upload
    assert set(stored) == {f"inputs/{job_id}" for job_id in acknowledged}
    for job_id in acknowledged:
        assert again.wait_state(job_id)["state"] == "succeeded"


def test_a_second_server_on_the_data_dir_leaves_uploads_in_flight(
        server_factory: Callable[..., Server]) -> None:
    """A second ``conveyor serve`` on the same data dir (or a restart that overlaps the old
    process) sweeps at start-up, without grace: it must take only what dead writers left.
    It used to delete the temp file of an upload in flight, which then failed with a 500."""
    first = server_factory(CONVEYOR_WORKERS="1")
    size = 8_000_000  # 6 s at the pace of _slow_upload: the second server starts meanwhile
    data = os.urandom(size)
    results, sent = [0], [0]
    upload = threading.Thread(target=_slow_upload, args=(first.port, data, results, sent, 0))
    upload.start()
    deadline = time.monotonic() + 10
    while _holding_bytes(first) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _holding_bytes(first) == 1, "the upload never reached the disk"
    # Its temp file was last written long ago, as far as the sweep can tell.
    [temp] = list((first.data_dir / "files" / "tmp").iterdir())
    os.utime(temp, (time.time() - 3600, time.time() - 3600))
    second = server_factory(data_dir=first.data_dir, CONVEYOR_WORKERS="0")
    assert sent[0] < size, "the upload ended before the second server started"
    upload.join(60)
    assert results == [202]
    listed = httpx.get(f"{second.url}/v1/jobs").json()["items"]
    assert len(listed) == 1
    assert listed[0]["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert first.wait_state(listed[0]["id"])["state"] == "succeeded"
    assert second.stored("inputs/") == {f"inputs/{listed[0]['id']}": data}
