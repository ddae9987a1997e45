"""SIGTERM drains a real ``conveyor serve`` (API.md "System"; issue 11, issue 17 item 8)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conveyor.store import Store
from tests.api.promtext import scrape, value
from tests.conftest import Server


def _submit(srv: Server, pipeline: str, options: dict[str, object] | None = None) -> str:
    resp = httpx.post(f"{srv.url}/v1/jobs", content=b"x",
                      params={"pipeline": pipeline, "filename": "x.bin",
                              "options": json.dumps(options or {})}, timeout=30)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _await(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Stream(threading.Thread):
    """Reads an SSE stream to its end; ``ended`` is when the server closed it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ended: float | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(60, read=60)) as resp:
                assert resp.status_code == 200
                for _ in resp.iter_raw():
                    pass
        except httpx.HTTPError:
            pass
        self.ended = time.monotonic()


def _slow_upload(srv: Server, body: bytes) -> socket.socket:
    """Start a raw-body upload and send half of its body; the rest is sent by the test."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = (f"POST /v1/jobs?pipeline=noop&filename=slow.bin HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), json.loads(rest[:length])


def _store(data_dir: Path) -> Store:
    return Store(f"sqlite:///{data_dir / 'conveyor.db'}", run_dir=data_dir / "run")


def test_sigterm_drains_uploads_streams_and_jobs(server_factory: Callable[..., Server]) -> None:
    drain_s = 10.0
    srv = server_factory(CONVEYOR_WORKERS="2", CONVEYOR_DRAIN_S=str(drain_s))
    short = _submit(srv, "sleep", {"seconds": 5, "cooperative": False, "steps": 5})
    long = _submit(srv, "sleep", {"seconds": 120, "cooperative": False, "steps": 120})
    for job_id in (short, long):
        srv.wait_state(job_id, ("running",))
    streams = [Stream(f"{srv.url}/v1/events"), Stream(f"{srv.url}/v1/jobs/{long}/events")]
    for stream in streams:
        stream.start()
    _await(lambda: value(scrape(srv.url), "conveyor_event_subscribers") == 2, 10, "streams")
    body = os.urandom(200_000)
    sock = _slow_upload(srv, body)
    _await(lambda: value(scrape(srv.url), "conveyor_uploads_in_flight") == 1, 10, "upload")

    assert srv.proc is not None
    signalled, signalled_wall = time.monotonic(), time.time()
    os.kill(srv.proc.pid, signal.SIGTERM)  # the server only, as an orchestrator does

    # (c) readiness fails at once.
    _await(lambda: httpx.get(f"{srv.url}/readyz", timeout=5).status_code == 503, 2, "readyz")
    ready = httpx.get(f"{srv.url}/readyz", timeout=5)
    assert ready.json()["code"] == "draining"
    assert ready.headers["content-type"].startswith("application/problem+json")
    # (d) open event streams end promptly; a new one is refused.
    for stream in streams:
        stream.join(timeout=5)
        assert stream.ended is not None and stream.ended - signalled < 5
    refused = httpx.get(f"{srv.url}/v1/events", timeout=5)
    assert refused.status_code == 503 and refused.json()["code"] == "draining"
    # (b) a new upload is refused, with Retry-After.
    late = httpx.post(f"{srv.url}/v1/jobs", content=b"late",
                      params={"pipeline": "noop", "filename": "late.bin"}, timeout=10)
    assert late.status_code == 503, late.text
    assert late.json()["code"] == "draining"
    assert 1 <= int(late.headers["retry-after"]) <= drain_s
    # (a) the upload in flight finishes and gets its 202.
    sock.sendall(body[len(body) // 2:])
    status, job = _answer(sock)
    sock.close()
    assert status == 202, job
    assert job["input"]["size"] == len(body)  # type: ignore[index]
    metrics = scrape(srv.url)
    assert value(metrics, "conveyor_draining") == 1
    assert value(metrics, "conveyor_uploads_refused_draining_total") == 1

    # (e) the server exits once the drain time is over; a job that did not finish is released.
    srv.proc.wait(drain_s + 15)
    assert time.monotonic() - signalled < drain_s + 10
    store = _store(srv.data_dir)
    try:
        finished = store.jobs.get(short)
        assert finished is not None and finished.state.value == "succeeded"
        assert finished.finished_at is not None and finished.finished_at > signalled_wall
        released = store.jobs.get(long)
        assert released is not None and released.state.value == "queued", released
        assert released.attempts == 0 and released.error is None
        uploaded = store.jobs.get(str(job["id"]))
        assert uploaded is not None and uploaded.state.value == "queued"
    finally:
        store.close()


def test_sigterm_with_streams_open_stops_at_once(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    streams = [Stream(f"{srv.url}/v1/events") for _ in range(5)]
    for stream in streams:
        stream.start()
    _await(lambda: value(scrape(srv.url), "conveyor_event_subscribers") == 5, 10, "streams")
    assert srv.proc is not None
    signalled = time.monotonic()
    os.kill(srv.proc.pid, signal.SIGTERM)
    srv.proc.wait(20)
    # Was 26.7 s (issue 17 item 8): the streams held uvicorn's shutdown until its time-out.
    assert time.monotonic() - signalled < 5
    for stream in streams:
        stream.join(timeout=5)
        assert stream.ended is not None
