"""Issue 11, item 11: right after an upload the jobs table shows the job's row.

The race: the page lists jobs (none yet), the user uploads, and the job's ``queued`` and
``started`` events pass before the page's event stream is open, so nobody hears them. When the
stream opened, an empty table skipped its re-read ("No jobs yet"), while the filter chips, read
from /metrics, said ``all 1`` and ``running 1``. The test makes that timing certain by holding
the page's ``/v1/events`` request until the job runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.browser

Page = Any  # playwright.sync_api.Page


def _running_job(server: Server, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = httpx.get(f"{server.url}/v1/jobs", params={"state": "running"}).json()["items"]
        if items:
            return str(items[0]["id"])
        time.sleep(0.05)
    raise AssertionError("the uploaded job never ran")


def test_the_row_is_there_right_after_an_upload(
    server: Server, page: Page, tmp_path: Path
) -> None:
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)  # the global stream waits until we let it go

    page.route("**/v1/events", hold)
    page.goto(server.url + "/")
    page.get_by_text("No jobs yet.").wait_for()
    page.wait_for_selector("#pipeline:not([disabled])")
    doc = tmp_path / "slow.txt"
    doc.write_text("zzz\n")
    page.select_option("#pipeline", "sleep")
    page.fill("[data-option='seconds'] input", "60")
    page.set_input_files("#file-input", [str(doc)])
    job_id = _running_job(server)  # its queued and started events went to no stream
    page.wait_for_function("() => document.querySelector('#live-status') !== null")
    assert held, "the page never asked for /v1/events"
    held[0].continue_()
    page.wait_for_selector("#live-status[data-status='live']")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for(timeout=5000)
    assert row.get_attribute("data-state") == "running"
    assert not page.get_by_text("No jobs yet.").is_visible()
    page.locator(".filters [data-state='running'] .count", has_text="1").wait_for()
    httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=10)


def test_an_upload_shows_its_row_at_once(server: Server, page: Page, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#live-status[data-status='live']")
    page.wait_for_selector("#pipeline:not([disabled])")
    doc = tmp_path / "quick.txt"
    doc.write_text("hello\n")
    page.select_option("#pipeline", "noop")
    page.set_input_files("#file-input", [str(doc)])
    page.locator("tr[data-job-id]", has_text="quick.txt").wait_for(timeout=5000)
    assert not page.get_by_text("No jobs yet.").is_visible()
