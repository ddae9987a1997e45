"""Interop with tus-js-client (the browser and Node client), run from Node as a subprocess.

The client's exact version is pinned by ``tusjs/package-lock.json``; a session-scoped fixture
runs ``npm ci`` once into a cache directory keyed by the lockfile's hash.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import objects
from tests.conftest import Server, need_service
from tests.uploads.conftest import TUS

HERE = Path(__file__).resolve().parent / "tusjs"
FILES = ("package.json", "package-lock.json", "upload.js")


@pytest.fixture(scope="session")
def tusjs() -> Path:
    """A directory with upload.js and its node_modules (installed once, from the lockfile)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            need_service(tool, "tus-js-client runs on Node")
    lock = (HERE / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("TEST_CACHE_DIR", Path.home() / ".cache" / "conveyor-tests"))
    folder = cache / f"tusjs-{hashlib.sha256(lock).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(HERE / name, folder / name)
    if not (folder / "node_modules" / "tus-js-client").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            need_service("npm ci", f"could not install tus-js-client: {done.stderr[-500:]}")
    return folder


def test_tus_js_client_pause_and_resume(server_factory: Callable[..., Server], tusjs: Path,
                                        tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = os.urandom(2 * 1024 * 1024 + 5)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    done = subprocess.run(["node", "upload.js", f"{srv.url}/v1/uploads", str(source),
                           str(256 * 1024)], cwd=tusjs, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    url = json.loads(done.stdout)["url"]
    head = httpx.head(url, headers=TUS)
    job = srv.wait_state(head.headers["Conveyor-Job-Id"])
    assert job["state"] == "succeeded"
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert job["input"]["filename"] == "js.bin"  # type: ignore[index]
    assert job["pipeline"] == "probe"


class RoundRobin:
    """An HTTP load balancer without sticky sessions: each request goes to the next server."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.sent: list[str] = []
        balancer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self) -> None:
                upstream = balancer.upstreams[len(balancer.sent) % len(balancer.upstreams)]
                balancer.sent.append(f"{self.command} {upstream}")
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                r = httpx.request(self.command, upstream + self.path, headers=headers,
                                  content=body, timeout=60)
                self.send_response(r.status_code)
                for name, value in r.headers.items():
                    if name.lower() not in ("content-length", "connection",
                                            "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_POST = do_PATCH = do_HEAD = do_DELETE = do_OPTIONS = relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tus_js_client_behind_a_balancer_without_sticky_sessions(
        server_factory: Callable[..., Server], tusjs: Path, moto: objects.Moto,
        tmp_path: Path) -> None:
    """On S3, two servers behind a round-robin balancer: the upload's requests alternate
    between them (pause and resume included) and the file arrives whole."""
    env = {**moto.env(), "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
           "CONVEYOR_WORKERS": "1"}
    a, b = server_factory(**env), server_factory(**env)
    balancer = RoundRobin([a.url, b.url])
    data = os.urandom(2 * 1024 * 1024 + 5)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    try:
        done = subprocess.run(["node", "upload.js", f"{balancer.url}/v1/uploads", str(source),
                               str(256 * 1024)], cwd=tusjs, capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        balancer.close()
    assert done.returncode == 0, done.stderr
    patches = [line.split()[1] for line in balancer.sent if line.startswith("PATCH")]
    assert len(patches) >= 9 and set(patches) == {a.url, b.url}, balancer.sent
    upload_path = json.loads(done.stdout)["url"].removeprefix(balancer.url)
    head = httpx.head(a.url + upload_path, headers=TUS)
    job = a.wait_state(head.headers["Conveyor-Job-Id"])
    assert job["state"] == "succeeded"
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert httpx.get(f"{b.url}/v1/jobs/{job['id']}/input").content == data
