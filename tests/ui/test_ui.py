"""The web UI in a real browser (Debian's Chromium via Playwright) against ``conveyor serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Server

pytestmark = pytest.mark.browser

Page = Any  # playwright.sync_api.Page; imported lazily so collection works without Playwright

# Records every value the upload progress bars take, so a test can see them move even when a
# local upload is over before Python could look.
RECORD_UPLOAD_PROGRESS = """
window.__uploadProgress = [];
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    if (el.nodeType === 1 && el.hasAttribute("data-upload-bar")) {
      window.__uploadProgress.push(Number(el.getAttribute("aria-valuenow")));
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
"""


def noise_jpeg(path: Path, size: tuple[int, int] = (1600, 1200)) -> Path:
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(path, quality=95)
    return path


def open_home(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#live-status[data-status='live']")
    page.wait_for_selector("#pipeline:not([disabled])")


def upload(page: Page, pipeline: str, *files: Path, **options: str) -> None:
    page.select_option("#pipeline", pipeline)
    for name, value in options.items():
        page.fill(f"[data-option='{name}'] input", value)
    page.set_input_files("#file-input", [str(f) for f in files])


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def api_job(server: Server, pipeline: str = "noop", **fields: str) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/jobs", files={"file": ("n.txt", b"hello\n")},
                          data={"pipeline": pipeline, **fields}, timeout=10)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_upload_jpeg_progress_success_and_thumbnail(
    server: Server, page: Page, tmp_path: Path, screenshots: Path
) -> None:
    photo = noise_jpeg(tmp_path / "noise.jpg")
    page.add_init_script(RECORD_UPLOAD_PROGRESS)
    open_home(page, server)
    upload(page, "image", photo)

    item = page.locator(".upload", has_text="noise.jpg")
    item.locator("[data-upload-bar][aria-valuenow='100']").wait_for()
    seen = page.evaluate("window.__uploadProgress")
    assert seen and max(seen) == 100, seen
    page.locator(".upload[data-state='succeeded']").wait_for()
    job_id = item.get_attribute("data-job-id")
    assert job_id
    assert server.wait_state(job_id)["state"] == "succeeded"
    page.locator(f"tr[data-job-id='{job_id}'][data-state='succeeded']").wait_for()
    shot(page, screenshots, "home-upload-and-list")

    item.get_by_role("link", name="View job").click()
    page.wait_for_url(f"**/#/jobs/{job_id}")
    page.locator(".job-view[data-state='succeeded']").wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#job-thumb');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    view = page.locator(".job-view")
    assert job["input"]["sha256"] in view.inner_text()
    result = page.locator("[data-section='sec-result']").inner_text()
    assert "1,600" in result and "1,200" in result  # width and height as readable fields
    assert page.locator(".artifact").count() == len(job["artifacts"])
    assert page.get_by_role("button", name="Cancel").is_disabled()
    assert page.get_by_role("button", name="Retry").is_disabled()
    assert page.get_by_role("button", name="Delete").is_enabled()
    page.locator(".ev-succeeded").wait_for()
    shot(page, screenshots, "job-view-succeeded")


def test_failed_job_shows_error_code(
    server: Server, page: Page, tmp_path: Path, screenshots: Path
) -> None:
    doc = tmp_path / "refused.txt"
    doc.write_text("not welcome\n")
    open_home(page, server)
    upload(page, "fail", doc)

    item = page.locator(".upload[data-state='failed']")
    item.wait_for()
    assert "bad_input" in item.inner_text()
    job_id = item.get_attribute("data-job-id")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.locator(".badge-failed").wait_for()
    # The row may show the state a moment before the re-read of the job fills in the rest.
    page.locator(f"tr[data-job-id='{job_id}']:has-text('bad_input')").wait_for(timeout=10_000)
    assert "bad_input" in row.inner_text()

    row.get_by_role("link", name="refused.txt").click()
    page.locator(".job-view[data-state='failed']").wait_for()
    assert page.locator(".error-box .error-code").inner_text() == "bad_input"
    assert "refused on purpose" in page.locator(".error-box").inner_text()
    assert page.get_by_role("button", name="Retry").is_enabled()
    assert page.get_by_role("button", name="Cancel").is_disabled()
    page.locator(".ev-failed", has_text="bad_input").wait_for()
    shot(page, screenshots, "job-view-failed")


def test_refused_upload_shows_problem_detail(
    server: Server, page: Page, tmp_path: Path, screenshots: Path
) -> None:
    photo = noise_jpeg(tmp_path / "small.jpg", (64, 48))
    open_home(page, server)
    # The form knows the schema's limits: nothing is sent.
    upload(page, "image", photo, quality="1000")
    error = page.locator("[data-option='quality'] .field-error")
    error.wait_for()
    assert "at most 100" in error.inner_text()
    assert page.locator(".upload").count() == 0

    # What only the server knows (here: a pipeline gone since the page loaded) is refused
    # with its problem document shown.
    page.fill("[data-option='quality'] input", "80")
    page.evaluate("""() => { const s = document.getElementById('pipeline');
        s.append(new Option('gone', 'gone')); s.value = 'gone'; }""")
    page.set_input_files("#file-input", [str(photo)])
    item = page.locator(".upload[data-state='refused']")
    item.wait_for()
    assert item.locator(".problem-code").inner_text()
    assert "gone" in item.locator(".problem-detail").inner_text()
    assert "Upload refused (4" in item.inner_text()
    assert httpx.get(f"{server.url}/v1/jobs").json()["items"] == []
    shot(page, screenshots, "upload-refused")


def test_cancel_slow_job_from_its_page(server: Server, page: Page, tmp_path: Path) -> None:
    doc = tmp_path / "slow.txt"
    doc.write_text("zzz\n")
    open_home(page, server)
    upload(page, "sleep", doc, seconds="60")

    item = page.locator(".upload", has_text="slow.txt")
    item.get_by_role("link", name="View job").click()
    view = page.locator(".job-view[data-state='running']")
    view.wait_for()
    job_id = view.locator(".job-id").inner_text()
    cancel = page.get_by_role("button", name="Cancel")
    cancel.click()
    page.locator(".job-view[data-state='cancelled']").wait_for()
    assert server.wait_state(job_id, timeout=20)["state"] == "cancelled"
    assert page.get_by_role("button", name="Retry").is_enabled()
    page.locator(".ev-cancelled").wait_for()

    # Delete asks for a second press (no window.confirm), then goes back to the list.
    delete = page.get_by_role("button", name="Delete")
    delete.click()
    page.get_by_role("button", name="Confirm delete").click()
    page.wait_for_url("**/#/")
    page.get_by_text("No jobs yet.").wait_for()
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}").status_code == 410


def test_reload_finds_the_same_jobs(server: Server, page: Page, tmp_path: Path) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"note-{i}.txt"
        f.write_text(f"note {i}\n")
        files.append(f)
    open_home(page, server)
    upload(page, "noop", *files)
    page.locator(".upload[data-state='succeeded']").nth(2).wait_for()
    ids = {page.locator(".upload").nth(i).get_attribute("data-job-id") for i in range(3)}

    page.reload()
    page.wait_for_selector("#live-status[data-status='live']")
    for job_id in ids:
        page.locator(f"tr[data-job-id='{job_id}'][data-state='succeeded']").wait_for()
    assert page.locator("table.jobs tbody tr").count() == 3
    assert page.locator(".upload").count() == 0  # the upload list is per page view


def test_paging_is_stable_while_jobs_arrive(server: Server, page: Page) -> None:
    made = [api_job(server)["id"] for _ in range(23)]
    open_home(page, server)
    rows = page.locator("table.jobs tbody tr")
    page.locator(f"tr[data-job-id='{made[-1]}']").wait_for()
    assert rows.count() == 20
    assert rows.first.get_attribute("data-job-id") == made[-1]  # newest first

    page.get_by_role("button", name="Older →").click()
    page.locator(f"tr[data-job-id='{made[0]}']").wait_for()
    assert rows.count() == 3
    older_page = [rows.nth(i).get_attribute("data-job-id") for i in range(3)]

    fresh = api_job(server)["id"]
    page.locator(".notice", has_text="1 new job").wait_for()
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(3)] == older_page

    page.get_by_role("button", name="← Newer").click()
    page.locator(f"tr[data-job-id='{fresh}']").wait_for()
    assert rows.first.get_attribute("data-job-id") == fresh
    # Live: a job created while the first page is open appears at its top without a reload.
    live = api_job(server)["id"]
    page.locator(f"tbody tr:first-child[data-job-id='{live}']").wait_for()
    assert rows.count() == 20

    page.get_by_role("button", name="failed").click()
    page.wait_for_url("**/#/?state=failed")
    page.get_by_text("No failed jobs.").wait_for()


def test_narrow_window_has_no_horizontal_scroll(
    server: Server, browser: Any, tmp_path: Path, screenshots: Path
) -> None:
    ok = api_job(server)
    bad = api_job(server, "fail")
    server.wait_state(bad["id"])
    server.wait_state(ok["id"])
    context = browser.new_context(viewport={"width": 375, "height": 800}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        open_home(page, server)
        page.locator(f"tr[data-job-id='{bad['id']}'][data-state='failed']").wait_for()
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(overflow) <= 0
        shot(page, screenshots, "narrow-home")
        page.goto(f"{server.url}/#/jobs/{bad['id']}")
        page.locator(".job-view[data-state='failed']").wait_for()
        page.locator(".ev-failed").wait_for()
        assert page.evaluate(overflow) <= 0
        shot(page, screenshots, "narrow-job-failed")
    finally:
        context.close()


def test_unreachable_server_shows_a_banner(server: Server, page: Page, tmp_path: Path) -> None:
    doc = tmp_path / "later.txt"
    doc.write_text("send me when you can\n")
    open_home(page, server)
    server.kill()
    banner = page.locator("#banner.banner-error")
    banner.wait_for()
    assert "cannot be reached" in banner.inner_text()
    # An upload tried meanwhile waits (it is not "refused") and goes when the server is back.
    page.set_input_files("#file-input", [str(doc)])
    item = page.locator(".upload[data-state='unsent']", has_text="later.txt")
    item.wait_for()
    assert "Not sent" in item.inner_text()
    assert item.get_by_role("button", name="Send now").is_visible()
    server.start()
    page.locator(".upload[data-state='succeeded']", has_text="later.txt").wait_for(timeout=30_000)
    banner.wait_for(state="hidden")


def test_keyboard_and_drop(server: Server, page: Page) -> None:
    open_home(page, server)
    focused = []
    active = "document.activeElement.id || document.activeElement.textContent"
    for _ in range(14):
        page.keyboard.press("Tab")
        focused.append(page.evaluate(active))
    assert "file-input" in focused and "pipeline" in focused, focused

    page.select_option("#pipeline", "noop")
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(["dropped\\n"], "dropped.txt", {type: "text/plain"}));
          const zone = document.getElementById("dropzone");
          zone.dispatchEvent(new DragEvent("dragover", {bubbles: true, dataTransfer: data}));
          zone.dispatchEvent(new DragEvent("drop", {bubbles: true, dataTransfer: data}));
        }"""
    )
    page.locator(".upload[data-state='succeeded']", has_text="dropped.txt").wait_for()
