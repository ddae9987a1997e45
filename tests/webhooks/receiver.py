"""A real HTTP webhook receiver for tests, keeping each delivery's headers and raw body."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.conftest import free_port


class Receiver:
    """Listens on a free loopback port; answers 204, after ``delay`` seconds. With
    ``hold_first``, the first request gets no answer until :attr:`release` is set (or 30 s):
    an endpoint that hangs (:attr:`first` is set once it holds one)."""

    def __init__(self, delay: float = 0.0, hold_first: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.first = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if hold_first and len(outer.got) == 1:
                    outer.first.set()
                    outer.release.wait(30)
                if delay:
                    time.sleep(delay)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def for_job(self, job_id: str, timeout: float = 60) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in self.got:
                if job_id.encode() in body:
                    return headers, body
            time.sleep(0.05)
        raise AssertionError(f"no webhook for {job_id}")

    def ids(self) -> list[str]:
        """The ``webhook-id`` of each request, in arrival order."""
        return [headers["webhook-id"] for headers, _ in self.got]

    def wait_for(self, count: int, timeout: float = 30) -> float:
        """Wait until ``count`` requests came; the seconds it took."""
        started = time.monotonic()
        while len(self.got) < count and time.monotonic() < started + timeout:
            time.sleep(0.05)
        return time.monotonic() - started

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def deliveries(server_url: str, job_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """``GET /v1/jobs/{id}/deliveries`` once it lists an attempt (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = httpx.get(
            f"{server_url}/v1/jobs/{job_id}/deliveries", timeout=10).json()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
