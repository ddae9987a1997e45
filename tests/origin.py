"""A real HTTP origin on 127.0.0.1 for URL import tests (a thread of the test process).

Routes (``{tag}`` makes a route's per-test state its own):

- ``/files/{name}``: the bytes registered with :meth:`Origin.put` (Content-Length set);
- ``/missing``: 404; ``/flaky/{tag}``: 503 the first time, then the ``data.csv`` file;
- ``/slow/{tag}``: the first request waits ``slow_s`` before answering, later ones at once;
- ``/chunked/{n}``: ``n`` bytes, chunked (no Content-Length);
- ``/cut/{tag}``: 300 000 bytes announced; the first time the connection drops after 100 000;
- ``/redirect?to=URL``: 302 to ``URL``; ``/loop/{n}``: 302 to ``/loop/{n+1}``.

Every request is recorded (path, ``Host`` header).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CSV = b"name,size\nalpha,1\nbeta,2\ngamma,3\n"
#: What ``/cut/{tag}`` serves in full.
CUT_BODY = bytes(range(256)) * 1171 + b"x" * 224


@dataclass
class Origin:
    server: ThreadingHTTPServer
    files: dict[str, bytes] = field(default_factory=lambda: {"data.csv": CSV})
    seen: list[tuple[str, str]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    slow_s: float = 3.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def put(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return self.url(f"/files/{name}")

    def count(self, path: str) -> int:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            return self.hits[path]


def _handler(ref: list[Origin]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            origin = ref[0]
            origin.seen.append((self.path, self.headers.get("host", "")))
            parts = urlsplit(self.path)
            path = parts.path
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if path.startswith("/files/"):
                    data = origin.files.get(path.removeprefix("/files/"))
                    if data is None:
                        self._send(404, b"no such file")
                    else:
                        self._send(200, data, content_type="application/octet-stream")
                elif path.startswith("/flaky/"):
                    if origin.count(path) == 1:
                        self._send(503, b"try later")
                    else:
                        self._send(200, CSV, content_type="text/csv")
                elif path.startswith("/slow/"):
                    if origin.count(path) == 1:
                        time.sleep(origin.slow_s)
                    self._send(200, CSV, content_type="text/csv")
                elif path.startswith("/cut/"):
                    self._cut(origin.count(path) == 1)
                elif path.startswith("/chunked/"):
                    self._chunked(int(path.removeprefix("/chunked/")))
                elif path == "/redirect":
                    target = parse_qs(parts.query)["to"][0]
                    self._send(302, location=target)
                elif path.startswith("/loop/"):
                    n = int(path.removeprefix("/loop/"))
                    self._send(302, location=f"/loop/{n + 1}")
                else:
                    self._send(404, b"not here")

        def _cut(self, first: bool) -> None:
            # Promises 300 000 bytes; the first time, the connection drops after 100 000.
            body = CUT_BODY
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:100_000] if first else body)
            if first:
                self.wfile.flush()
                self.close_connection = True

        def _chunked(self, total: int) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            while sent < total:
                part = chunk[: total - sent]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                sent += len(part)
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@contextlib.contextmanager
def running_origin() -> Iterator[Origin]:
    ref: list[Origin] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    server.daemon_threads = True
    origin = Origin(server)
    ref.append(origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
