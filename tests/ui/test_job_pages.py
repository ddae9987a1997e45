"""Issue 18: the job pages and the jobs list as a user sees them, in Chromium, desktop and phone.

One server and one browser for the module; each test groups its checks into few page loads.
Screenshots of the job pages land in ``test-output/screenshots``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Server, module_server
from tests.ui.conftest import TIMEOUT_MS

pytestmark = pytest.mark.browser

Page = Any
PHONE = {"width": 375, "height": 800}
TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "ui18", CONVEYOR_WORKERS="2")


def new_page(browser: Any, viewport: dict[str, int] | None = None, **kw: Any) -> tuple[Any, Page]:
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, **kw)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    context.errors = errors
    return context, page


def close(context: Any) -> None:
    errors = context.errors
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def post(srv: Server, name: str, data: bytes, pipeline: str, **options: Any) -> dict[str, Any]:
    fields = {"pipeline": pipeline}
    if options:
        fields["options"] = json.dumps(options)
    r = httpx.post(f"{srv.url}/v1/jobs", files={"file": (name, data)}, data=fields, timeout=30)
    assert r.status_code == 202, r.text
    return dict(r.json())


def jpeg(size: tuple[int, int], quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, "JPEG",
                                                                           quality=quality)
    return out.getvalue()


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def open_job(page: Page, srv: Server, job_id: str, state: str = "succeeded") -> None:
    page.goto(f"{srv.url}/#/jobs/{job_id}")
    page.locator(f".job-view[data-state='{state}']").wait_for()


def test_image_job_renditions_thumbnails_text_and_copy(
    srv: Server, browser: Any, screenshots: Path
) -> None:
    job = post(srv, "photo.jpg", jpeg((800, 600)), "image")
    srv.wait_state(job["id"])
    context, page = new_page(browser)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
    try:
        open_job(page, srv, job["id"])
        full = httpx.get(f"{srv.url}/v1/jobs/{job['id']}").json()
        small = min((a for a in full["artifacts"]), key=lambda a: a["size"])
        # Item 5: renditions smallest first, the duplicate said so, thumbnails from the smallest.
        order = page.locator("tr[data-rendition]").evaluate_all(
            "rows => rows.map(r => r.dataset.rendition)")
        assert order == ["w256.webp", "w1024.webp", "w2048.webp"]
        note = page.locator("tr[data-rendition='w2048.webp']").inner_text()
        assert "Same pixels as w1024.webp" in note and "800 px" in note
        cards = page.locator(".artifact").evaluate_all("els => els.map(e => e.dataset.artifact)")
        assert cards == ["w256.webp", "w1024.webp", "w2048.webp"]
        srcs = set(page.locator(".artifact img").evaluate_all("els => els.map(e => e.src)"))
        assert srcs == {srv.url + small["url"]}
        # Item 4: a finished job shows no stale step.
        progress = page.locator(".job-progress").inner_text()
        assert progress.startswith("Done in") and "rendition" not in progress
        # Item 9: exact times beside the relative ones, copy the id, sentence-case labels.
        created = page.locator(".facts dd").nth(2).inner_text()
        assert "ago" in created and any(str(y) in created for y in range(2024, 2100))
        page.get_by_role("button", name=f"Copy job id: {job['id']}").click()
        page.locator(".copy", has_text="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == job["id"]
        result = page.locator("[data-section='sec-result']").inner_text()
        assert f"800 {TIMES} 600 px" in result
        shot(page, screenshots, "job-image")
    finally:
        close(context)


def pdf_bytes(tmp: Path) -> bytes:
    from tests.processors.conftest import reportlab_pdf

    lines = "\n".join(f"line {i} of the first page" for i in range(40))
    path = reportlab_pdf(tmp / "three.pdf", [lines, "The second page", "The third page"])
    return path.read_bytes() if isinstance(path, Path) else (tmp / "three.pdf").read_bytes()


def test_pdf_pages_enlarge_and_text(
    srv: Server, browser: Any, tmp_path: Path, screenshots: Path
) -> None:
    job = post(srv, "three.pdf", pdf_bytes(tmp_path), "pdf", previews=2)
    srv.wait_state(job["id"])
    context, page = new_page(browser)
    try:
        open_job(page, srv, job["id"])
        thumbs = page.locator(".page-thumb")
        assert thumbs.count() == 2
        assert "1 of 3 pages have no preview" in page.locator(".result-pdf").inner_text()
        thumbs.first.click()
        page.locator("dialog.page-dialog[open] img.page-large").wait_for()
        page.wait_for_function("() => document.querySelector('.page-large').naturalWidth > 0")
        page.keyboard.press("Escape")
        page.locator("dialog.page-dialog[open]").wait_for(state="detached")
        # pages.json as pages, not raw JSON.
        pages = page.locator("[data-artifact='pages.json'] .pages > li")
        pages.nth(2).wait_for()
        assert pages.count() == 3
        assert "The third page" in pages.nth(2).inner_text()
        assert "\\n" not in page.locator("[data-artifact='pages.json']").inner_text()
        # text.txt: the first 20 lines, then "Show more".
        text = page.locator("[data-artifact='text.txt']")
        text.get_by_role("button", name="Show more").click()
        text.get_by_text("All ").wait_for()
        assert "line 39 of the first page" in text.locator("pre").inner_text()
        page.locator(".all-fields > summary").click()
        fields = page.locator(".all-fields").inner_text()
        assert "JavaScript" in fields and "XFA" in fields and "Pdf" not in fields
        shot(page, screenshots, "job-pdf")
    finally:
        close(context)


CSV = (b"id,name,amount\n1,ann,3.5\n2,bob,4\n3,cy,x,extra\n4,dee,5\n5,\"eve,6\n6,fay,7\n"
       b"7,gus,8\n")


def test_table_with_rejects_desktop_and_phone(
    srv: Server, browser: Any, screenshots: Path
) -> None:
    job = post(srv, "sales.csv", CSV, "table")
    assert srv.wait_state(job["id"])["state"] == "succeeded"
    context, page = new_page(browser)
    try:
        open_job(page, srv, job["id"])
        assert "2 lines were rejected" in page.locator(".warn-box").inner_text()
        page.locator(".rows-table tbody tr").first.wait_for()
        heads = page.locator(".rows-table th").evaluate_all("els => els.map(e => e.textContent)")
        assert heads == ["id", "name", "amount"]
        rejects = page.locator(".rejects-table tbody tr")
        rejects.first.wait_for()
        assert rejects.count() == 2
        assert "TOO MANY COLUMNS" in rejects.first.inner_text()
        page.locator(".profile-table").wait_for()
        distinct = page.locator(".profile-table tbody tr").first.locator("td").nth(2).inner_text()
        assert distinct.startswith("≈")
        shot(page, screenshots, "job-table-rejects")
        page.emulate_media(color_scheme="dark")
        shot(page, screenshots, "job-table-rejects-dark")
        # The list says the success had rejected lines.
        page.goto(f"{srv.url}/#/")
        page.locator(f"tr[data-job-id='{job['id']}'] .warn-chip", has_text="2 rejected").wait_for()
    finally:
        close(context)
    # Item 7: at phone width the profile table scrolls sideways instead of stacking letters.
    context, page = new_page(browser, PHONE, is_mobile=True)
    try:
        open_job(page, srv, job["id"])
        cell = page.locator(".profile-table tbody tr").nth(1).locator("td code").first
        cell.wait_for()
        assert cell.inner_text() == "VARCHAR"
        box = cell.bounding_box()
        assert box and box["height"] < 30 and box["width"] > box["height"], box
        assert page.evaluate(OVERFLOW) <= 0
        wrap = page.locator("[data-artifact='profile.json'] .table-wrap")
        assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
        shot(page, screenshots, "narrow-job-table")
        # The jobs list starts on the first screen.
        page.goto(f"{srv.url}/#/")
        page.locator("table.jobs tbody tr").first.wait_for()
        top = page.locator("#jobs-title").bounding_box()
        assert top and top["y"] < PHONE["height"], top
        assert page.evaluate(OVERFLOW) <= 0
        shot(page, screenshots, "narrow-home-list")
    finally:
        close(context)


def zip_of_photos(n: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(n):
            z.writestr(f"pic-{i}.jpg", jpeg((120, 90)))
    return out.getvalue()


def test_archive_children_counts_links_and_list(
    srv: Server, browser: Any, screenshots: Path
) -> None:
    parent = post(srv, "photos.zip", zip_of_photos(3), "archive")
    srv.wait_state(parent["id"])
    kids = httpx.get(f"{srv.url}/v1/jobs", params={"parent_id": parent["id"]}).json()["items"]
    assert len(kids) == 3
    for kid in kids:
        srv.wait_state(kid["id"])
    context, page = new_page(browser)
    try:
        open_job(page, srv, parent["id"])
        page.locator(".children-summary", has_text="succeeded").wait_for()
        summary = page.locator(".children-summary").inner_text()
        assert summary.startswith("3 child jobs") and "succeeded 3" in summary, summary
        links = page.locator(".child-link")
        assert links.count() == 3
        shot(page, screenshots, "job-archive")
        links.first.click()
        page.locator(".job-view[data-state='succeeded']").wait_for()
        page.locator(".parent-link", has_text="photos.zip").wait_for()
        facts = page.locator(".facts").inner_text()
        assert "image" in facts and "via auto" in facts
        # Item 9: an auto job's options show what applied to the pipeline it ran as.
        options = page.locator("[data-section='sec-options']")
        options.get_by_text("these options applied").wait_for()
        assert "Sizes" in options.inner_text() and "(default)" in options.inner_text()
        assert "Keep metadata" in options.inner_text()
        # The child list: the parent's counts on the chips, pipelines, thumbnails, downloads.
        page.goto(f"{srv.url}/#/?parent={parent['id']}")
        rows = page.locator("table.jobs tbody tr")
        rows.nth(2).wait_for()
        page.locator(".chip[data-state='all'] .count", has_text="3").wait_for()
        assert page.locator(".chip[data-state='succeeded'] .count").inner_text() == "3"
        page.locator(".parent-chip", has_text="photos.zip").wait_for()
        first = rows.first
        assert first.locator(".cell-pipeline").inner_text().startswith("image")
        first.locator(".parent-line", has_text="photos.zip").wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('img.row-thumb')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length === 3")
        href = first.get_by_role("link", name="Download").get_attribute("href")
        assert href and "/artifacts/w" in href and href.endswith(".webp")
        assert page.locator(".page-label").inner_text() == f"1{DASH}3 of 3"
    finally:
        close(context)


def test_failed_retried_and_cancelled_pages(
    srv: Server, browser: Any, tmp_path: Path, screenshots: Path
) -> None:
    gate = tmp_path / "gate"
    job = post(srv, "gated.txt", b"g\n", "gate", path=str(gate))
    srv.wait_state(job["id"])
    context, page = new_page(browser)
    try:
        open_job(page, srv, job["id"], "failed")
        page.locator(".ev-failed", has_text="gate_closed").wait_for()
        # Item 4: a failed job shows no progress bar at all.
        assert page.locator(".job-progress").is_hidden()
        shot(page, screenshots, "job-failed")

        gate.touch()
        page.get_by_role("button", name="Retry").click()
        page.locator(".job-view[data-state='running']").wait_for()
        # A long step with no progress: an indeterminate bar, not a frozen 0 %.
        page.locator(".job-progress .bar-indeterminate").wait_for()
        assert "working" in page.locator(".job-progress").inner_text()
        page.locator(".ev-run", has_text="Run 2").wait_for()
        Path(f"{gate}.go").touch()
        page.locator(".job-view[data-state='succeeded']").wait_for()
        page.locator(".ev-succeeded").wait_for()
        # Item 1: after a reload the history still holds both runs (the server replays them).
        page.reload()
        page.locator(".ev-succeeded").wait_for()
        types = page.locator(".timeline > li").evaluate_all(
            "els => els.map(e => e.className)")
        assert types.index("ev ev-failed") < types.index("ev-run") < types.index("ev ev-succeeded")
        assert "run 2" in page.locator(".facts").inner_text()
        shot(page, screenshots, "job-retried")

        slow = post(srv, "slow.txt", b"z\n", "sleep", seconds=40, steps=8)
        srv.wait_state(slow["id"], ("running",))
        open_job(page, srv, slow["id"], "running")
        page.get_by_role("button", name="Cancel").click()
        # Item 3: 202 means "stopping", until the job.cancelled event clears it.
        page.locator(".action-msg", has_text="Stopping").wait_for()
        page.locator(".job-view[data-state='cancelled']").wait_for()
        page.locator(".action-msg:empty").wait_for(state="attached")
        page.locator(".ev-cancelled", has_text="running attempt stopped").wait_for()
        shot(page, screenshots, "job-cancelled")

        # Item 10: delete lands on the list with a visible confirmation.
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("button", name="Confirm delete").click()
        page.wait_for_url("**/#/")
        flash = page.locator("#flash")
        flash.wait_for()
        assert "Deleted slow.txt" in flash.inner_text()
        assert httpx.get(f"{srv.url}/v1/jobs/{slow['id']}").status_code == 410
    finally:
        close(context)


def test_list_totals_page_in_url_and_upload_panel(srv: Server, browser: Any) -> None:
    for _ in range(21):
        post(srv, "n.txt", b"n\n", "noop")
    context, page = new_page(browser)
    try:
        page.goto(f"{srv.url}/#/")
        page.wait_for_selector("#live-status[data-status='live']")
        label = page.locator(".page-label")
        page.wait_for_function(
            "() => / of \\d+$/.test(document.querySelector('.page-label').textContent)")
        counts = httpx.get(f"{srv.url}/metrics").text
        total = sum(int(float(line.rsplit(" ", 1)[1])) for line in counts.splitlines()
                    if line.startswith("conveyor_jobs{state="))
        assert label.inner_text() == f"1{DASH}20 of {total}"
        page.get_by_role("button", name="Older →").click()
        page.wait_for_url("**/#/?page=2")
        page.wait_for_function("() => document.querySelector('.page-label').textContent"
                               f".startsWith('21{DASH}')")
        page.reload()
        # The total comes with the state counts, read after the page itself.
        page.wait_for_function("() => document.querySelector('.page-label').textContent"
                               f" === '21{DASH}{total} of {total}'")
        assert label.inner_text() == f"21{DASH}{total} of {total}"

        # Item 8: settings come first, the whole drop area opens the picker, limits are known.
        pipeline = page.locator("#pipeline").bounding_box()
        drop = page.locator("#dropzone").bounding_box()
        assert pipeline and drop and pipeline["x"] < drop["x"]
        with page.expect_file_chooser() as chooser:
            page.locator(".drop-title").click()
        assert chooser.value.is_multiple()
        page.select_option("#pipeline", "image")
        page.fill("[data-option='sizes'] input", "256, 99999")
        page.set_input_files("#file-input", files=[{"name": "x.jpg", "mimeType": "image/jpeg",
                                                    "buffer": jpeg((32, 32))}])
        error = page.locator("[data-option='sizes'] .field-error")
        error.wait_for()
        assert "at most 16384" in error.inner_text()
        assert page.locator(".upload").count() == 0
    finally:
        close(context)
