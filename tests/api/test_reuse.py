"""Result reuse (issue 16): ``reuse: true`` makes a job succeeded at once from an earlier
identical job's result and artifacts, shared safely between the two."""

from __future__ import annotations

import http.server
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Client
from tests.conftest import Server, module_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "reuse", CONVEYOR_WORKERS="1",
                             CONVEYOR_WEBHOOK_ALLOW_PRIVATE="true")


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback webhook receiver that answers 204 and keeps every body it was sent."""
    bodies: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", bodies
    httpd.shutdown()
    httpd.server_close()


def _post(srv: Server, data: bytes, pipeline: str = "echo", options: Any = None,
          **query: str) -> dict[str, Any]:
    params = {"pipeline": pipeline, "filename": "in.bin", **query}
    if options is not None:
        params["options"] = json.dumps(options)
    resp = httpx.post(f"{srv.url}/v1/jobs", content=data, params=params, timeout=30)
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _done(srv: Server, data: bytes, pipeline: str = "echo", options: Any = None) -> dict[str, Any]:
    """An original: submitted without reuse, run by a worker to success."""
    job = srv.wait_state(_post(srv, data, pipeline, options)["id"])
    assert job["state"] == "succeeded", job
    return job


def _events(srv: Server, job_id: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{srv.url}/v1/jobs/{job_id}/events", timeout=30)
    assert resp.status_code == 200
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]


def _sql(srv: Server, statement: str, *args: object) -> None:
    with sqlite3.connect(srv.data_dir / "conveyor.db") as db:
        db.execute(statement, args)


def _artifact(srv: Server, job_id: str, name: str = "echo.bin") -> httpx.Response:
    return httpx.get(f"{srv.url}/v1/jobs/{job_id}/artifacts/{name}", timeout=30)


def test_reuse_hit_runs_nothing_and_shares_the_artifacts(srv: Server, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    options = {"marks": str(marks)}
    first = _done(srv, b"same bytes", "mark", options)
    assert len(list(marks.iterdir())) == 1

    # Query parameter, raw body; options in another key order and spacing are the same options.
    reused = _post(srv, b"same bytes", "mark", {"seconds": 0.0, "marks": str(marks)},
                   reuse="true")
    assert reused["id"] != first["id"]
    assert reused["state"] == "succeeded" and reused["attempts"] == 0
    assert reused["result"] == first["result"]
    assert [(a["name"], a["sha256"], a["size"]) for a in reused["artifacts"]] == [
        (a["name"], a["sha256"], a["size"]) for a in first["artifacts"]]
    assert _artifact(srv, reused["id"], "attempt.txt").content == b"attempt 1\n"
    # Its own input, kept as uploaded.
    assert httpx.get(f"{srv.url}/v1/jobs/{reused['id']}/input").content == b"same bytes"

    events = _events(srv, reused["id"])
    assert [e["type"] for e in events] == ["job.queued", "job.succeeded"]
    assert all(e["data"]["reused_from"] == first["id"] for e in events)
    assert events[1]["data"]["result"] == first["result"]

    # Multipart form field: a hit too. No worker ran for either.
    resp = httpx.post(f"{srv.url}/v1/jobs", files={"file": ("in.bin", b"same bytes")},
                      data={"pipeline": "mark", "options": json.dumps(options), "reuse": "true"})
    assert resp.status_code == 202 and resp.json()["state"] == "succeeded", resp.text
    time.sleep(0.5)
    assert len(list(marks.iterdir())) == 1
    metrics = httpx.get(f"{srv.url}/metrics", timeout=10).text
    assert "conveyor_jobs_reused_total 2.0" in metrics.splitlines()


def test_the_python_client_asks_for_reuse(srv: Server, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"client bytes")
    with Client(srv.url) as client:
        first = client.wait(client.submit(source, pipeline="echo")["id"], timeout=60)
        assert first["state"] == "succeeded"
        again = client.submit(source, pipeline="echo", reuse=True)
    assert again["state"] == "succeeded" and again["attempts"] == 0
    assert again["artifacts"][0]["sha256"] == first["artifacts"][0]["sha256"]


def test_a_reused_job_sends_its_webhook(srv: Server,
                                        hooks: tuple[str, list[dict[str, Any]]]) -> None:
    url, bodies = hooks
    first = _done(srv, b"hooked")
    reused = _post(srv, b"hooked", reuse="true", webhook_url=url)
    assert reused["state"] == "succeeded"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not bodies:
        time.sleep(0.1)
    assert len(bodies) == 1, bodies
    text = json.dumps(bodies[0])
    assert "job.succeeded" in text and reused["id"] in text and first["id"] in text


def test_no_reuse_unless_asked(srv: Server) -> None:
    first = _done(srv, b"asked?")
    for query in ({}, {"reuse": "false"}):
        job = _post(srv, b"asked?", **query)
        assert job["state"] == "queued"
        ran = srv.wait_state(job["id"])
        assert ran["state"] == "succeeded" and ran["attempts"] == 1
        assert "reused_from" not in _events(srv, job["id"])[-1]["data"]
    assert first["attempts"] == 1


def test_bad_reuse_value_is_a_422(srv: Server) -> None:
    resp = httpx.post(f"{srv.url}/v1/jobs", content=b"x",
                      params={"pipeline": "echo", "filename": "a", "reuse": "maybe"})
    assert resp.status_code == 422 and resp.json()["code"] == "bad_parameter"


def _miss(srv: Server, data: bytes, pipeline: str = "echo", options: Any = None) -> None:
    job = _post(srv, data, pipeline, options, reuse="true")
    assert job["state"] == "queued", job
    ran = srv.wait_state(job["id"])
    assert ran["state"] == "succeeded" and ran["attempts"] == 1


def test_reuse_misses_on_any_difference(srv: Server) -> None:
    first = _done(srv, b"original input", options={"name": "a.bin"})
    _miss(srv, b"original input", options={"name": "b.bin"})  # options
    _miss(srv, b"original input", "mark")  # pipeline
    _miss(srv, b"another input", options={"name": "a.bin"})  # input sha256

    # Every earlier job with these inputs is now made by another tenant, then by another
    # processor version: neither may be reused.
    _sql(srv, "UPDATE jobs SET tenant_id = 'other' WHERE input_sha256 = ?",
         first["input"]["sha256"])
    _miss(srv, b"original input", options={"name": "a.bin"})
    _sql(srv, "UPDATE jobs SET tenant_id = 'default', processor_version = '0' "
         "WHERE input_sha256 = ?", first["input"]["sha256"])
    _miss(srv, b"original input", options={"name": "a.bin"})
    # The job just run has the current version: the next one reuses it.
    assert _post(srv, b"original input", options={"name": "a.bin"},
                 reuse="true")["state"] == "succeeded"


@pytest.mark.parametrize("delete_first", ["original", "reuse"])
def test_deleting_one_job_keeps_the_others_artifacts(srv: Server, delete_first: str) -> None:
    data = f"shared {delete_first}".encode()
    original = _done(srv, data)
    reused = _post(srv, data, reuse="true")
    assert reused["state"] == "succeeded"
    first, second = ((original, reused) if delete_first == "original" else (reused, original))

    assert httpx.delete(f"{srv.url}/v1/jobs/{first['id']}").status_code == 204
    assert _artifact(srv, first["id"]).status_code == 410
    resp = _artifact(srv, second["id"])
    assert resp.status_code == 200 and resp.content == data
    assert httpx.get(f"{srv.url}/v1/jobs/{second['id']}/input").content == data
    # A deleted job is not reused; a live reuse of it still can be.
    third = _post(srv, data, reuse="true")
    assert third["state"] == "succeeded"
    assert _events(srv, third["id"])[-1]["data"]["reused_from"] == second["id"]

    for job in (second, third):
        assert httpx.delete(f"{srv.url}/v1/jobs/{job['id']}").status_code == 204
    # The last reference is gone: so are the bytes.
    stored = srv.stored("artifacts/")
    assert not [k for k in stored if k.startswith(f"artifacts/{original['id']}/")], stored


def _expire(srv: Server, job_id: str) -> None:
    """Let the retention sweep take ``job_id`` now (as if its retention had run out)."""
    _sql(srv, "UPDATE jobs SET expires_at = ? WHERE id = ?", time.time() - 1, job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and httpx.get(
            f"{srv.url}/v1/jobs/{job_id}").status_code != 410:
        time.sleep(0.1)
    assert httpx.get(f"{srv.url}/v1/jobs/{job_id}").status_code == 410


def test_retention_sweep_keeps_shared_artifacts(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_SWEEP_INTERVAL_S="0.5", CONVEYOR_WORKERS="1")
    original = _done(srv, b"kept while used")
    reused = _post(srv, b"kept while used", reuse="true")
    assert reused["state"] == "succeeded"

    _expire(srv, original["id"])
    resp = _artifact(srv, reused["id"])
    assert resp.status_code == 200 and resp.content == b"kept while used"
    assert srv.stored(f"artifacts/{original['id']}/")

    _expire(srv, reused["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and srv.stored():
        time.sleep(0.1)
    assert srv.stored() == {}


def test_cli_submit_reuse(srv: Server, tmp_path: Path) -> None:
    source = tmp_path / "cli.bin"
    source.write_bytes(b"bytes sent by the command line")
    first = _done(srv, source.read_bytes())

    def submit(*extra: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "submit", "--url", srv.url, "--pipeline", "echo",
             *extra, str(source)], env=srv.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        job: dict[str, Any] = httpx.get(f"{srv.url}/v1/jobs/{done.stdout.strip()}",
                                        timeout=30).json()
        return job

    # The file name is the job's filename, not the earlier job's: only bytes, pipeline,
    # options and processor version decide a match.
    reused = submit("--reuse")
    assert reused["state"] == "succeeded" and reused["attempts"] == 0, reused
    assert reused["result"] == first["result"]
    fresh = submit()  # without --reuse the job runs
    assert fresh["id"] != reused["id"] and fresh["state"] in ("queued", "running", "succeeded")
    assert srv.wait_state(fresh["id"])["attempts"] == 1
