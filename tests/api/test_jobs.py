"""The job routes over real HTTP: read, list, cancel, retry, delete, download, system."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable

import httpx
from PIL import Image

from tests.conftest import Server


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _submit(srv: Server, pipeline: str, data: bytes = b"hello", **fields: str) -> str:
    resp = httpx.post(f"{srv.url}/v1/jobs", files={"file": ("in.bin", data)},
                      data={"pipeline": pipeline, **fields})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def test_unknown_id_is_404_and_deleted_is_410(api: Server) -> None:
    resp = httpx.get(f"{api.url}/v1/jobs/01NOPE")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"
    job_id = _submit(api, "probe")
    api.wait_state(job_id)
    assert httpx.delete(f"{api.url}/v1/jobs/{job_id}").status_code == 204
    for path in ("", "/input", "/events"):
        resp = httpx.get(f"{api.url}/v1/jobs/{job_id}{path}")
        assert resp.status_code == 410 and resp.json()["code"] == "gone", path
    assert not (api.data_dir / "files" / "inputs" / job_id).exists()
    assert httpx.delete(f"{api.url}/v1/jobs/{job_id}").status_code == 410


def test_artifact_download_headers_range_and_etag(api: Server) -> None:
    job_id = _submit(api, "image", _jpeg(), options='{"sizes": [256]}')
    job = api.wait_state(job_id)
    assert job["state"] == "succeeded", job
    (art,) = job["artifacts"]  # type: ignore[misc]
    url = f"{api.url}{art['url']}"
    full = httpx.get(url)
    assert full.status_code == 200
    assert hashlib.sha256(full.content).hexdigest() == art["sha256"]
    assert full.headers["etag"] == f'"{art["sha256"]}"'
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["content-disposition"].startswith("attachment")
    assert full.headers["content-type"] == "image/webp"
    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == full.content[10:20]
    assert httpx.get(url, headers={"If-None-Match": full.headers["etag"]}).status_code == 304
    missing = httpx.get(f"{api.url}/v1/jobs/{job_id}/artifacts/nope.webp")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    traversal = httpx.get(f"{api.url}/v1/jobs/{job_id}/artifacts/..%2f..%2fconveyor.db")
    assert traversal.status_code == 404


def test_cancel_and_retry_answers(api: Server) -> None:
    job_id = _submit(api, "sleep", options='{"seconds": 30, "steps": 300}')
    api.wait_state(job_id, ("running",))
    resp = httpx.post(f"{api.url}/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
    assert api.wait_state(job_id)["state"] == "cancelled"
    again = httpx.post(f"{api.url}/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    retried = httpx.post(f"{api.url}/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202 and retried.json()["state"] in ("queued", "running")
    httpx.post(f"{api.url}/v1/jobs/{job_id}/cancel")
    assert api.wait_state(job_id)["state"] == "cancelled"
    done = _submit(api, "noop")
    api.wait_state(done)
    resp = httpx.post(f"{api.url}/v1/jobs/{done}/retry")
    assert resp.status_code == 409 and resp.json()["code"] == "conflict"


def test_failed_job_carries_code_message_and_retryable(api: Server) -> None:
    job = api.wait_state(_submit(api, "fail"))
    assert job["state"] == "failed"
    assert job["error"] == {"code": "bad_input", "message": "this file is refused on purpose",
                            "retryable": False}
    assert job["attempts"] == 1


def test_list_is_newest_first_with_stable_cursor_paging(api: Server) -> None:
    ids = [_submit(api, "noop", pipeline_tag) for pipeline_tag in [b"1", b"2", b"3", b"4"]]
    page1 = httpx.get(f"{api.url}/v1/jobs", params={"pipeline": "noop", "limit": 2}).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    _submit(api, "noop")  # a new job must not shift the next page
    page2 = httpx.get(f"{api.url}/v1/jobs", params={"pipeline": "noop", "limit": 2,
                                                    "cursor": page1["next_cursor"]}).json()
    assert [j["id"] for j in page2["items"]] == ids[::-1][2:4]
    bad = httpx.get(f"{api.url}/v1/jobs", params={"state": "dancing"})
    assert bad.status_code == 422 and bad.json()["code"] == "bad_parameter"
    for job_id in ids:
        api.wait_state(job_id)
    done = httpx.get(f"{api.url}/v1/jobs", params={"state": "succeeded", "limit": 500}).json()
    assert set(ids) <= {j["id"] for j in done["items"]}


def test_pipelines_list_builtins_with_schemas(api: Server) -> None:
    pipes = {p["name"]: p for p in httpx.get(f"{api.url}/v1/pipelines").json()}
    for name in ("auto", "probe", "image", "pdf", "table", "archive"):
        assert name in pipes, name
    assert "sizes" in str(pipes["image"]["options_schema"])
    assert pipes["sleep"]["description"]  # plug-ins appear too


def test_health_readiness_metrics_and_openapi(api: Server) -> None:
    assert httpx.get(f"{api.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{api.url}/readyz").json()
    assert ready["checks"]["database"] == "ok" and ready["checks"]["workers"] == 1
    metrics = httpx.get(f"{api.url}/metrics").text
    assert 'conveyor_jobs{state="succeeded"}' in metrics
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/retry", "/v1/jobs/{job_id}/input",
                 "/v1/jobs/{job_id}/artifacts/{name}", "/v1/jobs/{job_id}/events", "/v1/events",
                 "/v1/jobs/{job_id}/deliveries", "/v1/pipelines", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]


def _job_counts(srv: Server) -> dict[str, float]:
    """``conveyor_jobs{state=...}`` samples parsed from the Prometheus text of /metrics."""
    resp = httpx.get(f"{srv.url}/metrics")
    assert resp.status_code == 200
    counts: dict[str, float] = {}
    for line in resp.text.splitlines():
        if line.startswith('conveyor_jobs{state="'):
            labels, _, value = line.rpartition(" ")
            counts[labels.removeprefix('conveyor_jobs{state="').removesuffix('"}')] = float(value)
    return counts


def test_metrics_count_the_jobs_by_state(api: Server) -> None:
    # The module's server is shared: let earlier tests' jobs settle, then compare deltas.
    deadline = time.monotonic() + 30
    before = _job_counts(api)
    while before["queued"] + before["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
        before = _job_counts(api)
    assert before["queued"] == before["running"] == 0, before
    succeeded = [_submit(api, "noop") for _ in range(3)]
    failed = _submit(api, "fail")
    for job_id in succeeded:
        assert api.wait_state(job_id)["state"] == "succeeded"
    assert api.wait_state(failed)["state"] == "failed"
    after = _job_counts(api)
    assert after["succeeded"] - before["succeeded"] == 3, (before, after)
    assert after["failed"] - before["failed"] == 1, (before, after)
    assert after["queued"] == after["running"] == 0
    assert after["cancelled"] == before["cancelled"]
    listed = httpx.get(f"{api.url}/v1/jobs", params={"state": "succeeded", "limit": 500}).json()
    assert after["succeeded"] == len(listed["items"]) >= 3


def test_unknown_route_and_method_are_problems(api: Server) -> None:
    resp = httpx.get(f"{api.url}/v1/nothing")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"
    resp = httpx.put(f"{api.url}/v1/jobs")
    assert resp.status_code == 405 and resp.json()["code"] == "method_not_allowed"


def test_retention_expires_jobs(server_factory: Callable[..., Server],
                                backend_env: dict[str, str]) -> None:
    # Long enough for the job to finish (and its artifact to be stored) on a busy machine.
    srv = server_factory(CONVEYOR_RETENTION="10s", CONVEYOR_SWEEP_INTERVAL_S="0.5", **backend_env)
    job_id = _submit(srv, "echo")
    assert srv.wait_state(job_id, timeout=9)["state"] == "succeeded"
    assert httpx.get(f"{srv.url}/v1/jobs/{job_id}").status_code == 200
    assert f"inputs/{job_id}" in srv.stored("inputs/")
    assert len(srv.stored(f"artifacts/{job_id}/")) == 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        srv.stored() or httpx.get(f"{srv.url}/v1/jobs/{job_id}").status_code != 410
    ):
        time.sleep(0.1)
    resp = httpx.get(f"{srv.url}/v1/jobs/{job_id}")
    assert resp.status_code == 410 and resp.json()["code"] == "gone"
    assert srv.stored() == {}  # its input and its artifacts are gone
