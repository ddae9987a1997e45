"""Event readers that stop reading are dropped; the server's memory stays bounded and live
readers keep getting every event (issue 17, item 7)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Server, module_server

STALLED = 100
JOBS = 2
EVENTS_PER_JOB = 2500


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "stalled", CONVEYOR_WORKERS="1",
                             CONVEYOR_EVENT_SEND_TIMEOUT_S="2",
                             CONVEYOR_PROGRESS_INTERVAL_S="0")


def _subscribers(srv: Server) -> int:
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    match = re.search(r"^conveyor_event_subscribers (\d+)", text, re.M)
    assert match, text
    return int(match.group(1))


def _wait_subscribers(srv: Server, want: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    count = _subscribers(srv)
    while time.monotonic() < deadline and count != want:
        time.sleep(0.1)
        count = _subscribers(srv)
    return count


def _stalled_reader(srv: Server) -> socket.socket:
    """A subscriber that never reads (a small receive buffer, so its backlog shows soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def _ended(sock: socket.socket, timeout: float = 10) -> bool:
    """Read what is left; True when the server closed or reset the connection."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


class LiveReader(threading.Thread):
    """Reads /v1/events as fast as they come, keeping every event id and type."""

    def __init__(self, srv: Server) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.ids: list[int] = []
        self.terminal: set[str] = set()
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(10, read=60)) as client, \
                    client.stream("GET", f"{self.srv.url}/v1/events") as resp:
                self.connected.set()
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        self.ids.append(int(event["id"]))
                        if event["type"] in ("job.succeeded", "job.failed"):
                            self.terminal.add(event["job_id"])
                    if self.stop.is_set():
                        return
        except httpx.HTTPError as exc:
            # The server stops at the module's end, while this reader waits for a keep-alive.
            if not self.stop.is_set():
                self.error = exc


def _send_queue_bytes(port: int) -> int:
    """Bytes waiting in the kernel's send queues of the server's sockets on ``port``."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, queues = fields[1], fields[4]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    total += int(queues.split(":")[0], 16)
    return total


def test_stalled_event_readers_are_dropped_and_live_ones_keep_up(srv: Server) -> None:
    server = psutil.Process(srv.proc.pid if srv.proc else 0)
    live = LiveReader(srv)
    live.start()
    assert live.connected.wait(10)
    stalled = [_stalled_reader(srv) for _ in range(STALLED)]
    try:
        assert _wait_subscribers(srv, STALLED + 1) == STALLED + 1
        rss_before = server.memory_info().rss

        jobs = []
        for _ in range(JOBS):
            resp = httpx.post(f"{srv.url}/v1/jobs", content=b"x", timeout=10, params={
                "pipeline": "progress", "filename": "a",
                "options": json.dumps({"events": EVENTS_PER_JOB})})
            assert resp.status_code == 202, resp.text
            jobs.append(resp.json()["id"])
        for job_id in jobs:
            assert srv.wait_state(job_id, timeout=120)["state"] == "succeeded"

        # The stalled readers did not take their data: dropped after the 2 s send time-out,
        # their connections aborted. The live one is still subscribed.
        assert _wait_subscribers(srv, 1) == 1
        rss_growth = server.memory_info().rss - rss_before
        assert rss_growth < 64 * 1024 * 1024, rss_growth
        # The aborted connections' unsent bytes were freed (only the live reader's remain).
        assert _send_queue_bytes(srv.port) < 1024 * 1024
        assert all(_ended(sock) for sock in stalled)

        # The live reader got every event of both jobs, in order, none missing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and live.terminal != set(jobs):
            time.sleep(0.1)
        assert live.terminal == set(jobs) and live.error is None
        assert live.ids == list(range(live.ids[0], live.ids[-1] + 1))
        assert len(live.ids) >= JOBS * EVENTS_PER_JOB
        metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
        stalled_total = re.search(r"^conveyor_event_streams_stalled_total (\d+)", metrics, re.M)
        assert stalled_total and int(stalled_total.group(1)) >= STALLED, metrics

        # A dropped reader resumes where it left off with Last-Event-ID.
        middle = live.ids[len(live.ids) // 2]
        with httpx.stream("GET", f"{srv.url}/v1/events", timeout=10,
                          headers={"Last-Event-ID": str(middle)}) as resp:
            first = next(line for line in resp.iter_lines() if line.startswith("id: "))
        assert first == f"id: {middle + 1}"
    finally:
        live.stop.set()
        for sock in stalled:
            sock.close()
