"""A real HTTP webhook receiver for tests, keeping each delivery's headers and raw body."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import free_port


class Receiver:
    """Listens on a free loopback port; answers 204, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
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

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
