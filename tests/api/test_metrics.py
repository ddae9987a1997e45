"""/metrics from prometheus_client, worker processes' observations included (issue 11)."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest

from conveyor.runner.worker import PROCESS_NAME
from tests.api.promtext import scrape, value
from tests.conftest import Server


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    """A loopback webhook receiver that answers 204 and records the paths it was sent."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", seen
    httpd.shutdown()
    httpd.server_close()


def _submit(srv: Server, pipeline: str, body: bytes, **params: str) -> str:
    resp = httpx.post(f"{srv.url}/v1/jobs", content=body,
                      params={"pipeline": pipeline, "filename": "x.bin", **params}, timeout=30)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _workers(srv: Server) -> list[psutil.Process]:
    assert srv.proc is not None
    return [p for p in psutil.Process(srv.proc.pid).children(recursive=True)
            if p.name() == PROCESS_NAME]


def test_metrics_count_jobs_run_by_worker_processes(
    server_factory: Callable[..., Server], receiver: tuple[str, list[str]]
) -> None:
    hook, seen = receiver
    srv = server_factory(CONVEYOR_WORKERS="2", CONVEYOR_WEBHOOK_ALLOW_PRIVATE="true")
    before = scrape(srv.url)
    bodies = [os.urandom(1000 + 37 * i) for i in range(5)]
    ok = [_submit(srv, "noop", body, webhook_url=hook) for body in bodies]
    bad = [_submit(srv, "fail", b"x" * 10, max_attempts="1") for _ in range(2)]
    for job_id in ok:
        assert srv.wait_state(job_id)["state"] == "succeeded"
    for job_id in bad:
        assert srv.wait_state(job_id)["state"] == "failed"
    deadline = time.monotonic() + 30
    while len(seen) < len(ok) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen) == len(ok)
    got = httpx.get(f"{srv.url}/v1/jobs/{ok[0]}/input", timeout=10)
    assert got.content == bodies[0]

    after = scrape(srv.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sent = sum(map(len, bodies)) + 20
    assert delta("conveyor_upload_bytes_total") == sent
    assert delta("conveyor_uploads_accepted_total") == 7
    assert delta("conveyor_accept_seconds_count") == 7
    assert delta("conveyor_accept_seconds_sum") > 0
    # Observed in the worker processes, summed by the server: the multiprocess mode works.
    assert delta("conveyor_queue_wait_seconds_count") == 7
    run = "conveyor_job_run_seconds_count"
    assert delta(run, pipeline="noop", outcome="succeeded") == 5
    assert delta(run, pipeline="fail", outcome="failed") == 1 * 2
    assert delta("conveyor_webhook_deliveries_total", outcome="delivered") == 5
    assert delta("conveyor_download_bytes_total") == len(bodies[0])
    assert value(after, "conveyor_jobs", state="succeeded") == 5
    assert value(after, "conveyor_jobs", state="failed") == 2
    assert value(after, "conveyor_workers_alive") == 2
    assert value(after, "conveyor_draining") == 0

    # A worker killed (and restarted by the supervisor) keeps its counts in the sum.
    old = _workers(srv)
    assert len(old) == 2
    for proc in old:
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fresh = [p for p in _workers(srv) if p.pid not in {o.pid for o in old}]
        if len(fresh) == 2:
            break
        time.sleep(0.05)
    assert len(fresh) == 2
    again = scrape(srv.url)
    assert value(again, run, pipeline="noop", outcome="succeeded") == value(
        after, run, pipeline="noop", outcome="succeeded")
    assert value(again, "conveyor_queue_wait_seconds_count") == value(
        after, "conveyor_queue_wait_seconds_count")


def test_every_metric_has_help_and_type(server: Server) -> None:
    # A labelled series exists once observed: run one job first.
    assert server.wait_state(_submit(server, "noop", b"abc"))["state"] == "succeeded"
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert helped == typed
    for name in ("conveyor_jobs", "conveyor_event_subscribers", "conveyor_workers_alive",
                 "conveyor_uptime_seconds", "conveyor_accept_seconds",
                 "conveyor_upload_bytes_total", "conveyor_uploads_accepted_total",
                 "conveyor_download_bytes_total", "conveyor_queue_wait_seconds",
                 "conveyor_job_run_seconds", "conveyor_draining", "conveyor_uploads_in_flight"):
        assert name in helped, name
    for line in text.splitlines():
        if line and not line.startswith("#"):
            family = line.split("{")[0].split(" ")[0]
            assert any(family.startswith(h) for h in helped), line


def test_a_restarted_server_starts_from_zero(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    job_id = _submit(srv, "noop", b"abc")
    assert srv.wait_state(job_id)["state"] == "succeeded"
    run = "conveyor_job_run_seconds_count"
    assert value(scrape(srv.url), run, pipeline="noop", outcome="succeeded") == 1
    srv.stop()
    again = server_factory(CONVEYOR_WORKERS="1", data_dir=srv.data_dir)
    # The files of the processes that are gone were wiped: no count of the earlier run.
    samples = scrape(again.url)
    assert value(samples, run, pipeline="noop", outcome="succeeded") == 0
    assert value(samples, "conveyor_jobs", state="succeeded") == 1  # from the database
