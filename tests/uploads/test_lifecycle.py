"""Expiry (the maintenance sweep removes unfinished uploads and their bytes), CORS for browsers
on other origins, and the drain on SIGTERM (PATCHes in flight finish, creations get 503)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx

from tests.conftest import Server
from tests.uploads.conftest import TUS, create, patch

ORIGIN = "http://app.example"


def test_expiry_and_cors(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1", CONVEYOR_UPLOAD_EXPIRY="2s",
                         CONVEYOR_SWEEP_INTERVAL_S="0.3", CONVEYOR_CORS_ORIGINS=ORIGIN)
    with srv.client() as c:
        r = c.post("/v1/uploads", headers={**TUS, "Upload-Length": "10", "Origin": ORIGIN})
        assert r.status_code == 201
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"location", "upload-offset", "upload-length", "upload-expires",
                "tus-resumable", "conveyor-job-id", "link", "upload-metadata",
                "retry-after", "ratelimit-policy", "ratelimit", "x-request-id"} <= exposed
        expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
        assert time.time() < expires <= time.time() + 3
        path = r.headers["Location"]
        pre = c.options(path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable,upload-offset,content-type,"
                                              "upload-checksum"})
        assert pre.status_code == 200
        assert "PATCH" in pre.headers["Access-Control-Allow-Methods"]
        assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
        other = c.options(path, headers={"Origin": "http://evil.example",
                                         "Access-Control-Request-Method": "PATCH"})
        assert "Access-Control-Allow-Origin" not in other.headers
        assert patch(c, path, 0, b"abc").status_code == 204
        staged = srv.data_dir / "uploads" / f"{path.rsplit('/', 1)[1]}.bin"
        assert staged.exists()
        deadline = time.monotonic() + 15
        while staged.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not staged.exists(), "the sweep did not remove the expired upload's bytes"
        head = c.head(path, headers=TUS)
        assert head.status_code == 410
        assert patch(c, path, 3, b"def").status_code == 410


def test_drain_lets_patches_finish(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1", CONVEYOR_DRAIN_S="20")
    size = 1024 * 1024
    with srv.client() as c:
        path = create(c, size, filename="d.bin")
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    sock.sendall(head + b"x" * (size // 2))
    time.sleep(0.5)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    refused = httpx.post(srv.url + "/v1/uploads", headers={**TUS, "Upload-Length": "5"})
    assert refused.status_code == 503
    assert refused.json()["code"] == "draining"
    assert refused.headers["Tus-Resumable"] == "1.0.0" and "Retry-After" in refused.headers
    sock.sendall(b"x" * (size - size // 2))
    answer = sock.recv(65536).decode("latin-1")
    sock.close()
    assert answer.startswith("HTTP/1.1 204"), answer
    assert "conveyor-job-id:" in answer.lower()
    srv.proc.wait(30)
