"""Browser fixtures: Debian's Chromium driven by Playwright's sync API.

Chromium comes from apt (``/usr/bin/chromium``), installed here when missing and running as
root. Where it cannot be had, the browser tests skip with the reason, except under ``CI=true``,
where they fail (see ``need_service`` in the top-level conftest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, need_service

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-output" / "screenshots"
TIMEOUT_MS = 20_000


def _apt_install() -> str | None:
    """Install Debian's chromium; return why it failed, or None."""
    if not shutil.which("apt-get"):
        return "apt-get is not available (not a Debian-like system)"
    if os.geteuid() != 0:
        return "not running as root, so it cannot be installed with apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                              check=False)

    done = run(install)
    if done.returncode != 0:
        run(["apt-get", "update"])
        done = run(install)
    if done.returncode != 0 or not CHROMIUM.exists():
        return f"apt-get install chromium failed: {(done.stderr or done.stdout)[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """The Chromium binary, installed with apt when missing."""
    if not CHROMIUM.exists():
        why = _apt_install()
        if why is not None:
            need_service("Chromium", f"{CHROMIUM} is missing and {why}")
    return CHROMIUM


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "the playwright Python package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium_path),
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context and page, with bounded timeouts."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
