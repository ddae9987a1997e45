"""A URL import's job page in Chromium, before the worker fetched it (null size and hash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.ui.conftest import TIMEOUT_MS

pytestmark = pytest.mark.browser


def test_a_pending_url_import_renders(server_factory: Callable[..., Server],
                                      browser: Any) -> None:
    # No workers: the job stays queued with its input not fetched.
    srv = server_factory(CONVEYOR_WORKERS="0", CONVEYOR_URL_IMPORT_ALLOW_PRIVATE="127.0.0.1/32")
    source = "http://127.0.0.1:9/exports/report.csv"
    resp = httpx.post(f"{srv.url}/v1/jobs", json={"url": source, "pipeline": "probe"},
                      timeout=30)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{srv.url}/#/jobs/{job_id}")
        page.locator(".job-view[data-state='queued']").wait_for()
        page.get_by_text(source).wait_for()
        assert page.get_by_text("not fetched yet").count() == 3
        page.goto(f"{srv.url}/#/")
        page.get_by_text("report.csv").first.wait_for()
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
