"""The web UI against a server that needs keys: sign in, upload, see only the own tenant's jobs
(live, over the fetch-based event stream), thumbnails fetched with the key, sign out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import make_key
from tests.conftest import Server, base_env
from tests.ui.test_ui import noise_jpeg, shot

pytestmark = pytest.mark.browser

Page = Any


def test_sign_in_upload_own_jobs_only_sign_out(
    server_factory: Any, page: Page, tmp_path: Path, screenshots: Path
) -> None:
    data = tmp_path / "ui-keys"
    mine = make_key(base_env(data), "acme", "jobs:read", "jobs:write")
    theirs = make_key(base_env(data), "other", "jobs:read", "jobs:write")
    srv: Server = server_factory(data_dir=data)
    other_job = httpx.post(f"{srv.url}/v1/jobs", files={"file": ("theirs.txt", b"x")},
                           data={"pipeline": "noop"}, headers=theirs.headers).json()["id"]
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    page.goto(srv.url + "/")
    page.locator("form.signin").wait_for()
    page.fill("#api-key", "cvk_wrongwro_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    page.locator(".signin-error", has_text="not valid").wait_for()
    shot(page, screenshots, "signin")
    page.fill("#api-key", mine.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#live-status[data-status='live']")
    assert "Tenant acme" in page.locator("#identity").inner_text()

    photo = noise_jpeg(tmp_path / "mine.jpg", (320, 240))
    page.wait_for_selector("#pipeline:not([disabled])")
    page.select_option("#pipeline", "image")
    page.set_input_files("#file-input", [str(photo)])
    item = page.locator(".upload", has_text="mine.jpg")
    page.locator(".upload[data-state='succeeded']").wait_for()  # followed live, with the key
    job_id = item.get_attribute("data-job-id")
    assert job_id
    page.locator(f"tr[data-job-id='{job_id}'][data-state='succeeded']").wait_for()
    assert page.locator(f"tr[data-job-id='{other_job}']").count() == 0
    page.goto(f"{srv.url}/#/jobs/{job_id}")
    page.locator(".job-view[data-state='succeeded']").wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#job-thumb');"
        " return i && i.complete && i.naturalWidth > 0; }")
    shot(page, screenshots, "signed-in-job")

    # Another tenant's job is "not found" in the UI too.
    page.goto(f"{srv.url}/#/jobs/{other_job}")
    page.get_by_text("No such job.").wait_for()

    page.goto(srv.url + "/")
    page.get_by_role("button", name="Sign out").click()
    page.locator("form.signin").wait_for()
    assert page.evaluate("sessionStorage.getItem('conveyor.apiKey')") is None
    # The secret part (after "cvk_<id>_"; itself base64url, so it may hold "_" too).
    secret = mine.key.split("_", 2)[2]
    assert len(secret) == 43
    assert not [u for u in urls if mine.key in u or secret in u]
