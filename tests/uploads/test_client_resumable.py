"""``Client.submit_resumable`` / ``conveyor submit --resumable`` against a real ``conveyor
serve``: chunks, cut connections, a server killed and started again, a client that stopped
half-way and runs again, refusals, and a file changed under the upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import AsyncClient, Client, UploadStore
from conveyor.errors import ClientError
from tests.conftest import Server
from tests.uploads.cutter import Cutter

MiB = 1024 * 1024


class Stop(Exception):
    """What the test raises from a progress callback to stop a client half-way."""


def _file(tmp_path: Path, size: int, name: str = "f.bin") -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def _input(srv: Server, job_id: str) -> bytes:
    return httpx.get(f"{srv.url}/v1/jobs/{job_id}/input", timeout=30).content


def test_a_file_sent_in_chunks_becomes_one_job(server_factory: Callable[..., Server],
                                               tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 3 * MiB + 5)
    positions: list[int] = []
    with Client(srv.url) as client:
        job = client.submit_resumable(path, pipeline="probe", options={}, priority=3,
                                      chunk_size=MiB, on_progress=lambda n, _: positions.append(n))
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert job["input"]["filename"] == "f.bin"
    assert (job["pipeline"], job["priority"]) == ("probe", 3)
    # Each request starts where the last one ended: four PATCHes of at most 1 MiB.
    starts = [n for i, n in enumerate(positions) if i == 0 or positions[i - 1] == n]
    assert starts == [0, MiB, 2 * MiB, 3 * MiB]
    assert positions == sorted(positions) and positions[-1] == len(data)
    assert _input(srv, job["id"]) == data
    assert srv.wait_state(job["id"])["state"] == "succeeded"


def test_cut_connections_are_resumed_from_the_servers_offset(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 6 * MiB)
    # Each of the first three connections is cut after some bytes of the one big PATCH.
    with Cutter(srv.port, [MiB + 17, 2 * MiB + 3, 999_999]) as cutter, \
            Client(f"http://127.0.0.1:{cutter.port}") as client:
        job = client.submit_resumable(path, pipeline="probe")
        assert cutter.cut == 3
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert _input(srv, job["id"]) == data


def test_a_server_killed_mid_upload_is_waited_for(server_factory: Callable[..., Server],
                                                  tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 8 * MiB)
    killed = threading.Event()

    def kill_then_start() -> None:
        srv.kill()
        time.sleep(1.0)  # the client meets refused connections meanwhile
        srv.start()

    restarter = threading.Thread(target=kill_then_start)

    def on_progress(sent: int, _total: int) -> None:
        if sent >= 3 * MiB and not killed.is_set():
            killed.set()
            restarter.start()

    with Client(srv.url) as client:
        job = client.submit_resumable(path, pipeline="probe", chunk_size=MiB,
                                      on_progress=on_progress)
    restarter.join(60)
    assert killed.is_set()
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert _input(srv, job["id"]) == data


def _stop_after(client: Client, path: Path, store: UploadStore, position: int) -> Any:
    """Run an upload (1 MiB chunks) until ``position``, then stop the client as Ctrl-C would;
    the store's one entry (it remembers the upload)."""

    def stop(sent: int, _total: int) -> None:
        if sent > position:
            raise Stop

    with pytest.raises(Stop):
        client.submit_resumable(path, pipeline="probe", chunk_size=MiB, store=store,
                                on_progress=stop)
    (entry,) = json.loads(store.path.read_text()).values()
    return entry


def test_a_client_run_again_resumes_its_interrupted_upload(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 4 * MiB)
    store = UploadStore(tmp_path / "uploads.json")
    with Client(srv.url) as client:
        _stop_after(client, path, store, 2 * MiB)
        positions: list[int] = []
        job = client.submit_resumable(path, pipeline="probe", chunk_size=MiB, store=store,
                                      on_progress=lambda n, _: positions.append(n))
    # Two whole chunks were kept, and what reached the server of the third (the client
    # stopped after handing over its first 64 KiB): the rest is sent again.
    assert 2 * MiB <= positions[0] <= 2 * MiB + 65536
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert _input(srv, job["id"]) == data
    assert json.loads(store.path.read_text()) == {}  # forgotten once done


def test_a_remembered_upload_that_is_gone_starts_afresh(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 2 * MiB)
    store = UploadStore(tmp_path / "uploads.json")
    with Client(srv.url) as client:
        entry = _stop_after(client, path, store, MiB)
        gone = httpx.delete(entry["url"], headers={"Tus-Resumable": "1.0.0"}, timeout=10)
        assert gone.status_code == 204
        positions: list[int] = []
        job = client.submit_resumable(path, pipeline="probe", chunk_size=MiB, store=store,
                                      on_progress=lambda n, _: positions.append(n))
    assert positions[0] == 0
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_refusals_are_raised_at_once_and_an_empty_file_is_a_job(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="0", CONVEYOR_MAX_UPLOAD_BYTES=str(MiB))
    small, _ = _file(tmp_path, 1000, "small.bin")
    big, _ = _file(tmp_path, MiB + 1, "big.bin")
    with Client(srv.url) as client:
        started = time.monotonic()
        with pytest.raises(ClientError) as unknown:
            client.submit_resumable(small, pipeline="no-such-pipeline")
        with pytest.raises(ClientError) as too_large:
            client.submit_resumable(big, pipeline="probe")
        with pytest.raises(ClientError) as bad_options:
            client.submit_resumable(small, pipeline="image", options={"sizes": "many"})
        assert time.monotonic() - started < 5  # no retry of an answer that cannot change
        # An empty file is complete at its creation: its 201 names the job.
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        job = client.submit_resumable(empty, pipeline="probe")
    assert job["input"]["size"] == 0
    assert job["input"]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_pipeline")
    assert (too_large.value.status, too_large.value.code) == (413, "too_large")
    assert (bad_options.value.status, bad_options.value.code) == (422, "bad_options")


def test_a_file_changed_during_the_upload_cancels_its_job(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="0")  # the job stays queued until cancelled
    path, _ = _file(tmp_path, 2 * MiB)

    def rewrite_the_start(sent: int, _total: int) -> None:
        if MiB <= sent < MiB + 65536:
            with path.open("r+b") as fh:  # bytes already sent: the server keeps the old ones
                fh.write(b"changed")

    with Client(srv.url) as client:
        with pytest.raises(ClientError) as changed:
            client.submit_resumable(path, pipeline="probe", on_progress=rewrite_the_start)
        assert changed.value.code == "file_changed"
        (job,) = client.list()["items"]
    assert job["state"] == "cancelled"


def test_the_async_client_resumes_too(server_factory: Callable[..., Server],
                                      tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 3 * MiB)

    async def upload(port: int) -> dict[str, object]:
        async with AsyncClient(f"http://127.0.0.1:{port}") as client:
            return await client.submit_resumable(path, pipeline="probe", chunk_size=MiB)

    with Cutter(srv.port, [MiB + MiB // 2]) as cutter:
        job = asyncio.run(upload(cutter.port))
        assert cutter.cut == 1
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert _input(srv, str(job["id"])) == data


def test_cli_submit_resumable(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    path, data = _file(tmp_path, 3 * MiB)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "submit", "--url", srv.url, "--resumable",
         "--chunk-mb", "1", "--pipeline", "probe", "--wait", str(path)],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert srv.wait_state(job_id)["state"] == "succeeded"
    assert _input(srv, job_id) == data
    assert json.loads((tmp_path / "cache" / "conveyor" / "uploads.json").read_text()) == {}
    misuse = subprocess.run(
        [sys.executable, "-m", "conveyor", "submit", "--url", srv.url, "--resumable",
         "--reuse", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert misuse.returncode == 1 and "bad_usage" in misuse.stderr
