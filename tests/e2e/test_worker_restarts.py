"""A worker that keeps dying is restarted with back-off, and /readyz says why (issue 17, 2)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import Server


def test_a_crash_loop_backs_off_and_readyz_says_why(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1", CONVEYOR_RETRY_BASE_S="0",
                         CONVEYOR_RETRY_MAX_S="0")
    # Kills its worker on every attempt, and is retried at once: a crash loop.
    resp = httpx.post(f"{srv.url}/v1/jobs", content=b"x", timeout=10,
                      params={"pipeline": "abort", "filename": "a", "max_attempts": "50"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    started = time.monotonic()
    why = ""
    while time.monotonic() - started < 60 and "restarting in" not in why:
        ready = httpx.get(f"{srv.url}/readyz", timeout=10)
        if ready.status_code == 503:
            why = str(ready.json()["detail"])
        time.sleep(0.05)
    assert "worker 0 died" in why and "times in a row" in why and "restarting in" in why, why
    time.sleep(10)
    # Without back-off each crash is followed by a new attempt within a second (spawn time);
    # with it the delays are 0, 1, 2, 4, 8 s: at most about 6 attempts so far.
    attempts = httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10).json()["attempts"]
    elapsed = time.monotonic() - started
    assert 2 <= attempts <= 6, (attempts, elapsed, srv.log())
    log = srv.log()
    delays = [int(line.rsplit(" in ", 1)[1].split()[0]) for line in log.splitlines()
              if "keeps dying: restarting it in" in line]
    assert delays[:3] == [1, 2, 4], log
    # A healthy job still runs once the slot is back (the abort job is cancelled first).
    httpx.post(f"{srv.url}/v1/jobs/{job_id}/cancel", timeout=10)
    ok = httpx.post(f"{srv.url}/v1/jobs", content=b"x", timeout=10,
                    params={"pipeline": "probe", "filename": "a.txt"})
    assert srv.wait_state(ok.json()["id"], timeout=60)["state"] == "succeeded"
