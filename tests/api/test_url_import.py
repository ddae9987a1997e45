"""URL import end to end: a real ``conveyor serve`` fetching from a real origin on 127.0.0.1.

The server may reach 127.0.0.1 only (``CONVEYOR_URL_IMPORT_ALLOW_PRIVATE=127.0.0.1/32``); every
other non-public address stays refused, so a redirect to one is a refusal, never a connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conveyor import AsyncClient, Client, ClientError
from tests.conftest import Server, module_server
from tests.origin import CSV, CUT_BODY, Origin, running_origin

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as running:
        yield running


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(
        tmp_path_factory, "urlimport", CONVEYOR_WORKERS="2",
        CONVEYOR_MAX_UPLOAD_BYTES=str(MiB),
        CONVEYOR_URL_IMPORT_ALLOW_PRIVATE="127.0.0.1/32",
        CONVEYOR_URL_IMPORT_READ_TIMEOUT_S="1",
        CONVEYOR_RETRY_BASE_S="0.2", CONVEYOR_RETRY_MAX_S="0.5",
    )


def submit(srv: Server, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/jobs", json=body, headers=headers, timeout=30)


def imported(srv: Server, body: dict[str, Any]) -> dict[str, Any]:
    resp = submit(srv, body)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["state"] == "queued"
    assert job["input"]["source_url"] == body["url"]
    return srv.wait_state(job["id"])


def test_import_runs_the_pipeline_on_the_fetched_bytes(srv: Server, origin: Origin) -> None:
    data = b"id,word\n" + b"".join(b"%d,w%d\n" % (i, i) for i in range(2000))
    url = origin.put("words.csv", data)
    resp = submit(srv, {"url": url, "pipeline": "auto", "priority": 5})
    assert resp.status_code == 202, resp.text
    queued = resp.json()
    # Known before the fetch: the name (from the URL) and the source; the bytes are not.
    assert queued["input"]["filename"] == "words.csv"
    assert queued["input"]["size"] is None and queued["input"]["sha256"] is None
    assert queued["priority"] == 5
    assert resp.headers["location"] == f"/v1/jobs/{queued['id']}"
    job = srv.wait_state(queued["id"])
    assert job["state"] == "succeeded", job
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert job["input"]["size"] == len(data)  # type: ignore[index]
    assert job["input"]["media_type"] == "text/csv"  # type: ignore[index]
    assert job["result"]["routed_to"] == "table"  # type: ignore[index]
    # The fetched bytes are the job's input, served back like an upload's.
    got = httpx.get(f"{srv.url}/v1/jobs/{queued['id']}/input", timeout=30)
    assert got.status_code == 200 and got.content == data
    events = httpx.get(f"{srv.url}/v1/jobs/{queued['id']}/events", timeout=30)
    assert f"fetched {len(data)} bytes" in events.text


def test_remote_404_fails_with_url_status_at_once(srv: Server, origin: Origin) -> None:
    job = imported(srv, {"url": origin.url("/missing"), "pipeline": "probe"})
    assert job["state"] == "failed"
    assert job["error"]["code"] == "url_status"  # type: ignore[index]
    assert job["error"]["retryable"] is False  # type: ignore[index]
    assert job["attempts"] == 1
    assert job["input"]["sha256"] is None  # type: ignore[index]


def test_remote_503_is_retried(srv: Server, origin: Origin) -> None:
    job = imported(srv, {"url": origin.url("/flaky/a"), "pipeline": "probe"})
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["input"]["sha256"] == hashlib.sha256(CSV).hexdigest()  # type: ignore[index]


def test_slow_origin_times_out_then_the_retry_succeeds(srv: Server, origin: Origin) -> None:
    # Silent for 3 s the first time, past the 1 s idle-read time-out.
    resp = submit(srv, {"url": origin.url("/slow/one"), "pipeline": "probe", "max_attempts": 3})
    assert resp.status_code == 202
    # Not fetched yet: there are no input bytes to serve.
    early = httpx.get(f"{srv.url}/v1/jobs/{resp.json()['id']}/input", timeout=30)
    assert early.status_code == 404 and early.json()["code"] == "not_found"
    job = srv.wait_state(resp.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["result"]["sha256"] == hashlib.sha256(CSV).hexdigest()  # type: ignore[index]
    history = httpx.get(f"{srv.url}/v1/jobs/{job['id']}/events", timeout=30).text
    assert "url_unreachable" in history


def test_a_body_cut_short_is_fetched_again_whole(srv: Server, origin: Origin) -> None:
    job = imported(srv, {"url": origin.url("/cut/a"), "pipeline": "probe"})
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["input"]["sha256"] == hashlib.sha256(CUT_BODY).hexdigest()  # type: ignore[index]
    assert srv.stored(f"inputs/{job['id']}") == {f"inputs/{job['id']}": CUT_BODY}
    assert srv.unfinished() == []


def test_too_large_mid_stream_fails_and_keeps_no_bytes(srv: Server, origin: Origin) -> None:
    # Chunked, no Content-Length: the limit (1 MiB) is passed mid-stream.
    job = imported(srv, {"url": origin.url(f"/chunked/{2 * MiB}"), "pipeline": "probe"})
    assert job["state"] == "failed"
    assert job["error"]["code"] == "too_large"  # type: ignore[index]
    assert f"inputs/{job['id']}" not in srv.stored("inputs/")
    assert srv.unfinished() == []


def test_just_under_the_limit_chunked_is_fine(srv: Server, origin: Origin) -> None:
    job = imported(srv, {"url": origin.url(f"/chunked/{MiB}"), "pipeline": "probe"})
    assert job["state"] == "succeeded", job
    assert job["input"]["size"] == MiB  # type: ignore[index]


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://127.0.0.2:22/",  # loopback, but outside the allowed 127.0.0.1/32
    "http://[::1]/",
    "file:///etc/passwd",
])
def test_redirect_to_a_forbidden_address_fails_the_job(srv: Server, origin: Origin,
                                                       target: str) -> None:
    url = str(httpx.URL(origin.url("/redirect"), params={"to": target}))
    job = imported(srv, {"url": url, "pipeline": "probe"})
    assert job["state"] == "failed"
    assert job["error"]["code"] == "url_forbidden", job  # type: ignore[index]
    assert job["attempts"] == 1


def test_too_many_redirects_is_url_status(srv: Server, origin: Origin) -> None:
    job = imported(srv, {"url": origin.url("/loop/0"), "pipeline": "probe"})
    assert job["error"]["code"] == "url_status"  # type: ignore[index]
    assert "redirects" in job["error"]["message"]  # type: ignore[index]


def test_localhost_is_fetched_when_allowed(server_factory: Callable[..., Server],
                                           origin: Origin) -> None:
    srv = server_factory(CONVEYOR_URL_IMPORT_ALLOW_PRIVATE="127.0.0.0/8,::1/128",
                         CONVEYOR_WORKERS="1")
    job = imported(srv, {"url": origin.url("/files/data.csv", host="localhost"),
                         "pipeline": "probe"})
    assert job["state"] == "succeeded", job
    assert ("/files/data.csv", f"localhost:{origin.port}") in origin.seen


def test_loopback_names_and_addresses_are_refused_by_default(
        server_factory: Callable[..., Server], origin: Origin) -> None:
    srv = server_factory(CONVEYOR_WORKERS="0")
    # `localhost` is a host name that resolves to 127.0.0.1: refused like the address itself.
    for host in ("localhost", "127.0.0.1"):
        resp = submit(srv, {"url": origin.url("/files/data.csv", host=host)})
        assert resp.status_code == 422, resp.text
        assert resp.json()["code"] == "url_forbidden"
        assert "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE" in resp.json()["detail"]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"url": "http://10.0.0.1/x"}, 422, "url_forbidden"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, 422, "url_forbidden"),
    ({"url": "http://167772161/"}, 422, "url_forbidden"),  # 10.0.0.1 as one number
    ({"url": "http://0x7f000002/"}, 422, "url_forbidden"),
    ({"url": "http://[::ffff:10.0.0.1]/"}, 422, "url_forbidden"),
    ({"url": "http://100.64.0.1/"}, 422, "url_forbidden"),
    ({"url": "ftp://example.com/file"}, 422, "url_forbidden"),
    ({"url": "file:///etc/passwd"}, 422, "url_forbidden"),
    ({"url": "http://user:pw@127.0.0.1/"}, 422, "url_forbidden"),
    ({"url": ""}, 422, "bad_parameter"),
    ({"pipeline": "probe"}, 422, "bad_parameter"),
    ({"url": 5}, 422, "bad_parameter"),
    ({"url": "http://127.0.0.1/", "colour": "red"}, 422, "bad_parameter"),
    ({"url": "http://127.0.0.1/", "priority": "high"}, 422, "bad_parameter"),
    ({"url": "http://127.0.0.1/", "priority": 10**6}, 422, "bad_parameter"),
    ({"url": "http://127.0.0.1/", "options": "[1]"}, 422, "bad_options"),
    ({"url": "http://127.0.0.1/", "pipeline": "image", "options": {"nope": 1}}, 422,
     "bad_options"),
    ({"url": "http://127.0.0.1/", "pipeline": "no-such"}, 422, "unknown_pipeline"),
    ({"url": "http://127.0.0.1/", "webhook_url": "http://10.0.0.1/"}, 422, "bad_webhook_url"),
    (["http://127.0.0.1/"], 400, "malformed_body"),
])
def test_bad_bodies_are_refused_at_once(srv: Server, body: Any, status: int,
                                        code: str) -> None:
    resp = submit(srv, body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"url": "http://127.0.0.1/"', b"\xff\xfe",
                                 b"[" * 100_000])
def test_malformed_json_is_400(srv: Server, raw: bytes) -> None:
    resp = httpx.post(f"{srv.url}/v1/jobs", content=raw,
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["code"] in ("malformed_body", "bad_options")


def test_idempotency_key_compares_url_pipeline_and_options(srv: Server,
                                                           origin: Origin) -> None:
    key = os.urandom(8).hex()
    body = {"url": origin.url("/files/data.csv"), "pipeline": "probe"}
    first = submit(srv, body, **{"Idempotency-Key": key})
    assert first.status_code == 202
    again = submit(srv, body, **{"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = submit(srv, {**body, "url": origin.url("/files/other.csv")},
                   **{"Idempotency-Key": key})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    other = submit(srv, {**body, "pipeline": "noop"}, **{"Idempotency-Key": key})
    assert other.json()["code"] == "idempotency_key_reused"


def test_a_json_file_with_query_parameters_is_still_an_upload(srv: Server) -> None:
    resp = httpx.post(f"{srv.url}/v1/jobs?pipeline=probe&filename=x.json",
                      content=b'{"url": "http://10.0.0.1/"}',
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 202, resp.text
    assert resp.json()["input"]["source_url"] is None
    assert resp.json()["input"]["size"] == 27


def test_the_python_client_imports_a_url(srv: Server, origin: Origin) -> None:
    with Client(srv.url) as client:
        job = client.submit_url(origin.url("/files/data.csv"), pipeline="probe",
                                priority=2, filename="renamed.csv")
        assert job["input"]["filename"] == "renamed.csv" and job["priority"] == 2
        done = client.wait(job["id"], timeout=60)
        assert done["state"] == "succeeded"
        assert done["input"]["sha256"] == hashlib.sha256(CSV).hexdigest()
        with pytest.raises(ClientError) as err:
            client.submit_url("http://169.254.169.254/latest/meta-data/")
        assert err.value.code == "url_forbidden"

    async def via_async() -> dict[str, Any]:
        async with AsyncClient(srv.url) as client:
            return await client.submit_url(origin.url("/files/data.csv"), options={})

    assert asyncio.run(via_async())["state"] in ("queued", "running", "succeeded")


def test_the_cli_submits_from_a_url_and_waits(srv: Server, origin: Origin) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "submit", "--url", srv.url, "--pipeline", "probe",
         "--from-url", origin.url("/files/data.csv"), "--from-url", origin.url("/missing"),
         "--wait"],
        capture_output=True, text=True, timeout=120, env={**clean, "COLUMNS": "200"})
    assert done.returncode == 1, done.stderr  # the second job fails
    ids = done.stdout.split()
    assert len(ids) == 2
    assert "succeeded" in done.stderr and "url_status" in done.stderr
    assert httpx.get(f"{srv.url}/v1/jobs/{ids[0]}").json()["state"] == "succeeded"


def test_both_storage_backends_take_the_fetched_bytes(
        server_factory: Callable[..., Server], backend_env: dict[str, str],
        origin: Origin) -> None:
    srv = server_factory(CONVEYOR_URL_IMPORT_ALLOW_PRIVATE="127.0.0.1/32",
                         CONVEYOR_MAX_UPLOAD_BYTES=str(MiB), CONVEYOR_WORKERS="1",
                         **backend_env)
    data = os.urandom(300_000)
    job = imported(srv, {"url": origin.put("random.bin", data), "pipeline": "probe"})
    assert job["state"] == "succeeded", job
    assert srv.stored(f"inputs/{job['id']}") == {f"inputs/{job['id']}": data}
    big = imported(srv, {"url": origin.url(f"/chunked/{3 * MiB}"), "pipeline": "probe"})
    assert big["error"]["code"] == "too_large"  # type: ignore[index]
    assert srv.stored(f"inputs/{big['id']}") == {}
    assert srv.unfinished() == []
