"""Request ids, request lines and job transition lines in a real server's log (issue 11)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from tests.conftest import Server

_GENERATED = re.compile(r"^[0-9a-f]{32}$")


def _lines(srv: Server) -> list[dict[str, Any]]:
    assert srv.log_path is not None
    text = srv.log_path.read_text()
    # Every line is one JSON object, uvicorn's and the workers' included.
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _await_line(srv: Server, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [line for line in _lines(srv) if match(line)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no such log line in:\n{srv.log()}")


def _transitions(srv: Server, job_id: str) -> list[dict[str, Any]]:
    return [line for line in _lines(srv) if line.get("event") == "job"
            and line.get("job_id") == job_id]


def test_json_logs_carry_the_request_id_from_request_to_worker(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory("--log-format", "json", CONVEYOR_LOG_LEVEL="INFO",
                         CONVEYOR_WORKERS="1")
    resp = httpx.post(f"{srv.url}/v1/jobs", content=b"hello",
                      params={"pipeline": "noop", "filename": "a.txt"},
                      headers={"X-Request-ID": "client-req.42"})
    assert resp.status_code == 202 and resp.headers["x-request-id"] == "client-req.42"
    job_id = resp.json()["id"]
    assert srv.wait_state(job_id)["state"] == "succeeded"

    line = _request_line(srv, "client-req.42")
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/jobs", 202)
    assert line["duration_ms"] >= 0 and line["logger"] == "conveyor.access"
    _await_line(srv, lambda r: r.get("job_id") == job_id and r.get("state") == "succeeded")
    moves = _transitions(srv, job_id)
    assert [m["state"] for m in moves] == ["queued", "running", "succeeded"], moves
    assert [m["transition"] for m in moves] == ["job.queued", "job.started", "job.succeeded"]
    # The worker's lines name the request that created the job, and the attempt.
    assert {m["request_id"] for m in moves} == {"client-req.42"}
    assert [m["attempt"] for m in moves[1:]] == [1, 1]


def test_every_response_has_a_request_id_and_a_line(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("--log-format", "json", CONVEYOR_LOG_LEVEL="INFO",
                         CONVEYOR_WORKERS="1")
    seen: dict[str, int] = {}
    for method, path, headers, status in [
        ("GET", "/v1/jobs/nope", {}, 404),                          # a domain error
        ("PUT", "/v1/jobs", {"X-Request-ID": "x" * 129}, 405),      # too long: replaced
        ("POST", "/v1/jobs?pipeline=nope&filename=a", {"X-Request-ID": "a b"}, 422),
        ("GET", "/healthz", {"X-Request-ID": "ok-1"}, 200),
    ]:
        resp = httpx.request(method, f"{srv.url}{path}", headers=headers, content=b"x")
        assert resp.status_code == status, resp.text
        request_id = resp.headers["x-request-id"]
        if headers.get("X-Request-ID") == "ok-1":
            assert request_id == "ok-1"
        else:
            assert _GENERATED.match(request_id), request_id
        seen[request_id] = status
    for request_id, status in seen.items():
        assert _request_line(srv, request_id)["status"] == status


def _request_line(srv: Server, request_id: str) -> dict[str, Any]:
    return _await_line(srv, lambda r: r.get("event") == "request"
                       and r.get("request_id") == request_id)


def test_text_logs_by_default(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_LOG_LEVEL="INFO", CONVEYOR_WORKERS="1")
    resp = httpx.get(f"{srv.url}/healthz", headers={"X-Request-ID": "text-1"})
    assert resp.headers["x-request-id"] == "text-1"
    deadline = time.monotonic() + 10
    while "request_id=text-1" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in srv.log().splitlines() if "request_id=text-1" in x)
    assert " INFO conveyor.access: GET /healthz 200 " in line
    assert not line.startswith("{")


def test_worker_command_logs_json_from_the_environment(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory("--no-workers")
    resp = httpx.post(f"{srv.url}/v1/jobs", content=b"hello",
                      params={"pipeline": "noop", "filename": "a.txt"},
                      headers={"X-Request-ID": "made-by-api"})
    job_id = resp.json()["id"]
    photo = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(photo, "JPEG")
    image = httpx.post(f"{srv.url}/v1/jobs", content=photo.getvalue(),
                       params={"pipeline": "image", "filename": "a.jpg"})
    assert image.status_code == 202, image.text
    env = {**srv.env, "CONVEYOR_LOG_FORMAT": "json", "CONVEYOR_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-m", "conveyor", "worker", "--burst",
                           "--workers", "1"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(x) for x in done.stderr.decode().splitlines() if x.strip()]
    moves = [x for x in lines if x.get("event") == "job" and x.get("job_id") == job_id]
    assert [m["state"] for m in moves] == ["running", "succeeded"]
    assert {m["request_id"] for m in moves} == {"made-by-api"}
    assert srv.wait_state(image.json()["id"])["state"] == "succeeded"
    # No library chatter at INFO: libvips' per-operation lines, alembic's plug-in set-up.
    chatty = [x for x in lines if x["logger"] in ("pyvips", "alembic.runtime.plugins")]
    assert chatty == [], chatty[:3]
