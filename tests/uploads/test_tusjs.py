"""Interop with tus-js-client (the browser and Node client), run from Node as a subprocess.

The client's exact version is pinned by ``tusjs/package-lock.json``; a session-scoped fixture
runs ``npm ci`` once into a cache directory keyed by the lockfile's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

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
