"""Large files in the web UI go through tus (vendored tus-js-client): pause, resume, a server
restart mid-upload, and resuming after a page reload; real Chromium, real ``conveyor serve``."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.ui.test_ui import open_home

pytestmark = pytest.mark.browser

Page = Any
MiB = 1024 * 1024


def _throttle(page: Page, bytes_per_s: int = 8 * MiB) -> None:
    """Chromium's network emulation: uploads take seconds, so the test can act mid-way."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_s})


def _offsets(srv: Server) -> list[int]:
    with sqlite3.connect(srv.data_dir / "conveyor.db") as db:
        return [int(r[0]) for r in db.execute("SELECT upload_offset FROM uploads")]


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_large_upload_pauses_survives_a_restart_and_resumes(
        server_factory: Callable[..., Server], page: Page, tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = os.urandom(40 * MiB + 3)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    open_home(page, srv)
    _throttle(page)
    page.select_option("#pipeline", "probe")
    page.set_input_files("#file-input", [str(big)])
    item = page.locator("li.upload").first
    _wait(lambda: item.get_attribute("data-resumable") == "true", "the tus upload to start")
    _wait(lambda: any(o > 0 for o in _offsets(srv)), "a first chunk")
    item.locator("button[data-pause]").click()
    _wait(lambda: item.get_attribute("data-state") == "paused", "the pause")
    paused = max(_offsets(srv))
    assert 0 < paused < len(data)
    # The server goes away while the upload is paused; Resume meets it down, retries, and
    # carries on once it is back: from the durable offset, not from zero.
    srv.kill()
    item.locator("button[data-pause]").click()
    time.sleep(1.5)
    srv.start()
    _wait(lambda: item.get_attribute("data-state") in ("succeeded", "failed"),
          "the job to finish", timeout=120)
    assert item.get_attribute("data-state") == "succeeded"
    jobs = httpx.get(f"{srv.url}/v1/jobs", timeout=10).json()["items"]
    assert len(jobs) == 1
    assert jobs[0]["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert jobs[0]["input"]["filename"] == "big.bin"
    assert len(_offsets(srv)) == 1  # one upload, resumed; never started again


def test_upload_resumes_after_a_page_reload(server_factory: Callable[..., Server], page: Page,
                                            tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    data = os.urandom(24 * MiB + 1)
    big = tmp_path / "again.bin"
    big.write_bytes(data)
    open_home(page, srv)
    _throttle(page)
    page.set_input_files("#file-input", [str(big)])
    item = page.locator("li.upload").first
    _wait(lambda: any(o > 0 for o in _offsets(srv)), "a first chunk")
    item.locator("button[data-pause]").click()
    _wait(lambda: item.get_attribute("data-state") == "paused", "the pause")
    paused = max(_offsets(srv))
    page.reload()
    open_home(page, srv)
    page.set_input_files("#file-input", [str(big)])  # the same file, chosen again
    item = page.locator("li.upload").first
    _wait(lambda: item.get_attribute("data-state") in ("succeeded", "failed"),
          "the job to finish", timeout=120)
    assert item.get_attribute("data-state") == "succeeded"
    assert len(_offsets(srv)) == 1 and paused > 0  # the same upload went on
    job = httpx.get(f"{srv.url}/v1/jobs", timeout=10).json()["items"][0]
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
