"""Contract defects of issue 11 (items 1-6) and 17 (items 5, 9), each against a real server."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.api.test_ingest import _inputs, _leftovers, _problem
from tests.conftest import Server, need_module

BIG_ID = str(2**63)  # one past the largest event id


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, headers, body by Content-Length) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


# -- item 1: event ids out of range --------------------------------------------------------


def test_out_of_range_event_ids_are_400_before_the_stream(api: Server) -> None:
    job_id = httpx.post(f"{api.url}/v1/jobs?pipeline=noop&filename=a", content=b"a").json()["id"]
    for path in (f"/v1/jobs/{job_id}/events", "/v1/events"):
        for kwargs in ({"params": {"after": BIG_ID}}, {"headers": {"Last-Event-ID": BIG_ID}},
                       {"headers": {"Last-Event-ID": "99" * 40}}):
            resp = httpx.get(api.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]
            _problem(resp, 400, "bad_event_id")
    # The largest id is a valid (empty) resume point; a non-numeric header is ignored.
    api.wait_state(job_id)
    ok = httpx.get(f"{api.url}/v1/jobs/{job_id}/events", params={"after": str(2**63 - 1)},
                   timeout=10)
    assert ok.status_code == 200 and "job.succeeded" not in ok.text
    replay = httpx.get(f"{api.url}/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "x"},
                       timeout=10)
    assert replay.status_code == 200 and "job.queued" in replay.text
    assert "OverflowError" not in api.log()


# -- item 2: no body at all ----------------------------------------------------------------


def test_a_post_with_no_body_is_no_file(api: Server) -> None:
    jobs = httpx.get(f"{api.url}/v1/jobs?limit=500").json()["items"]
    _problem(httpx.post(f"{api.url}/v1/jobs"), 422, "no_file")
    _problem(httpx.post(f"{api.url}/v1/jobs?pipeline=probe", content=b""), 422, "no_file")
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n")  # no Content-Length
        status, headers, body = _answer(sock)
    assert status == 422 and headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == "no_file"
    assert httpx.get(f"{api.url}/v1/jobs?limit=500").json()["items"] == jobs
    # A named empty file is a file: raw with a filename, and an empty multipart part.
    named = httpx.post(f"{api.url}/v1/jobs?pipeline=probe&filename=empty.txt", content=b"")
    assert named.status_code == 202 and named.json()["input"]["size"] == 0
    part = httpx.post(f"{api.url}/v1/jobs", files={"file": ("e.txt", b"")})
    assert part.status_code == 202 and part.json()["input"]["size"] == 0


# -- item 3: methods ------------------------------------------------------------------------


def test_allow_lists_every_method_of_the_path(api: Server) -> None:
    job_id = httpx.post(f"{api.url}/v1/jobs?pipeline=noop&filename=a", content=b"a").json()["id"]
    opts = httpx.options(f"{api.url}/v1/jobs/{job_id}")
    assert opts.status_code == 204
    assert opts.headers["allow"] == "GET, HEAD, DELETE, OPTIONS"
    patch = httpx.patch(f"{api.url}/v1/jobs")
    _problem(patch, 405, "method_not_allowed")
    assert patch.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    put = httpx.put(f"{api.url}/v1/jobs/{job_id}/cancel")
    _problem(put, 405, "method_not_allowed")
    assert put.headers["allow"] == "POST, OPTIONS"


def test_head_answers_like_get_without_a_body(api: Server) -> None:
    job_id = httpx.post(f"{api.url}/v1/jobs?pipeline=noop&filename=a", content=b"a").json()["id"]
    api.wait_state(job_id)
    got = httpx.get(f"{api.url}/v1/jobs/{job_id}")
    head = httpx.head(f"{api.url}/v1/jobs/{job_id}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"]
    started = time.monotonic()
    stream = httpx.head(f"{api.url}/v1/events", timeout=10)  # an endless stream: ends at once
    assert stream.status_code == 200 and stream.headers["content-type"].startswith(
        "text/event-stream")
    assert time.monotonic() - started < 5
    assert httpx.head(f"{api.url}/v1/jobs/01NOPE").status_code == 404


# -- item 4: Idempotency-Key ----------------------------------------------------------------


def test_idempotency_key_reused_for_another_request(api: Server) -> None:
    headers = {"Idempotency-Key": "reuse-1"}
    url = f"{api.url}/v1/jobs"
    fast = json.dumps({"seconds": 0.01, "steps": 1})
    first = httpx.post(url, params={"pipeline": "sleep", "options": fast, "filename": "a"},
                       content=b"one", headers=headers)
    assert first.status_code == 202, first.text
    inputs = _inputs(api)
    for params, body in (({"pipeline": "sleep", "options": fast}, b"two"),  # another file
                         ({"pipeline": "noop"}, b"one"),  # another pipeline
                         ({"pipeline": "sleep", "options": json.dumps({"seconds": 0.02})},
                          b"one")):  # other options
        resp = httpx.post(url, params={**params, "filename": "a"}, content=body,
                          headers=headers)
        _problem(resp, 422, "idempotency_key_reused")
    multipart = httpx.post(url, headers=headers, files={"file": ("a", b"two")},
                           data={"pipeline": "sleep", "options": fast})
    _problem(multipart, 422, "idempotency_key_reused")
    same = httpx.post(url, headers=headers, files={"file": ("a", b"one")},
                      data={"pipeline": "sleep", "options": fast})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    assert _inputs(api) == inputs and _leftovers(api) == []


def test_idempotency_key_of_a_deleted_job_is_gone(api: Server) -> None:
    headers = {"Idempotency-Key": "gone-1"}
    first = httpx.post(f"{api.url}/v1/jobs?pipeline=noop&filename=a", content=b"x",
                       headers=headers)
    api.wait_state(first.json()["id"])
    assert httpx.delete(f"{api.url}/v1/jobs/{first.json()['id']}").status_code == 204
    again = httpx.post(f"{api.url}/v1/jobs?pipeline=noop&filename=a", content=b"x",
                       headers=headers)
    _problem(again, 410, "gone")


def test_idempotency_key_in_flight_is_409(api: Server) -> None:
    key = b"flight-1"
    body = hashlib.sha256(b"seed").digest() * 100  # 3,200 bytes
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs?pipeline=probe&filename=f HTTP/1.1\r\nHost: x\r\n"
                     b"Idempotency-Key: " + key + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:100])
        time.sleep(0.5)  # the server has read the headers and is receiving the body
        second = httpx.post(f"{api.url}/v1/jobs?pipeline=probe&filename=f", content=body,
                            headers={"Idempotency-Key": key.decode()})
        _problem(second, 409, "conflict")
        sock.sendall(body[100:])
        status, _headers, answer = _answer(sock)
    assert status == 202, answer
    replay = httpx.post(f"{api.url}/v1/jobs?pipeline=probe&filename=f", content=body,
                        headers={"Idempotency-Key": key.decode()})
    assert replay.status_code == 200 and replay.json()["id"] == json.loads(answer)["id"]


# -- item 5: text parts before the file are checked before the file arrives -----------------


@pytest.mark.parametrize(
    ("part", "value", "code"),
    [("pipeline", b"nope", "unknown_pipeline"), ("options", b"{not json", "bad_options"),
     ("priority", b"99999", "bad_parameter"), ("colour", b"red", "bad_parameter")],
)
def test_bad_text_part_before_the_file_is_refused_before_the_file(
    api: Server, part: str, value: bytes, code: str
) -> None:
    start = (b"--B\r\nContent-Disposition: form-data; name=\"" + part.encode() + b"\"\r\n\r\n"
             + value + b"\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; "
             b"filename=\"big.bin\"\r\n\r\n" + b"\0" * 65536)
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(start):x}\r\n".encode() + start + b"\r\n")
        # The rest of the (slow, large) file is never sent: the answer must come anyway.
        status, headers, body = _answer(sock)
    assert status == 422 and headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == code
    deadline = time.monotonic() + 5
    while _leftovers(api) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(api) == []


# -- item 6 and issue 17 item 5: OpenAPI, /docs, hostile options ----------------------------


def test_openapi_declares_problems_ranges_and_query_parameters(api: Server) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path, method, status)
    post = spec["paths"]["/v1/jobs"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["additionalProperties"] is False
    assert form["properties"]["priority"] == {**form["properties"]["priority"],
                                              "minimum": -1000, "maximum": 1000}
    assert form["properties"]["max_attempts"]["minimum"] == 1
    assert form["properties"]["timeout_s"]["maximum"] == 7 * 86400
    query = {p["name"] for p in post["parameters"] if p["in"] == "query"}
    assert {"pipeline", "options", "filename", "priority", "timeout_s"} <= query
    codes = post["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert "idempotency_key_reused" in codes["properties"]["code"]["enum"]


def test_docs_load_nothing_from_another_host(api: Server) -> None:
    page = httpx.get(f"{api.url}/docs")
    assert page.status_code == 200
    hosts = {urlparse(u).netloc for u in _urls(page.text)} - {""}
    assert hosts == set(), hosts
    need_module("swagger_ui_bundle", "/docs serves its fallback page without it")
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    js = httpx.get(f"{api.url}/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


def _urls(html: str) -> list[str]:
    import re

    return re.findall(r"""(?:src|href|url)\s*[=:(]\s*["']?([^"' >)]+)""", html)


def test_deep_or_huge_options_are_bad_options(api: Server) -> None:
    for options in ("[" * 50_000, '{"a":' * 5_000 + "1" + "}" * 5_000, '{"x": NaN}',
                    '{"x": 1e999}'):
        resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                          data={"pipeline": "probe", "options": options})
        _problem(resp, 422, "bad_options")
    raw = httpx.post(f"{api.url}/v1/jobs", params={"pipeline": "probe", "filename": "a",
                                                   "options": "[" * 5_000}, content=b"a")
    _problem(raw, 422, "bad_options")
    assert "RecursionError" not in api.log()


# -- issue 17 item 9: errors of the HTTP layer ----------------------------------------------


def test_framework_errors_are_problems(api: Server) -> None:
    for resp, status in ((httpx.get(f"{api.url}/v1/jobs", params={"limit": "x"}), 422),
                         (httpx.get(f"{api.url}/v1/jobs/x/events", params={"after": "-1"}), 422),
                         (httpx.get(f"{api.url}/nope/" + "a" * 60_000), 404),
                         (httpx.delete(f"{api.url}/v1/pipelines"), 405)):
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
        # Over CONVEYOR_MAX_HEADER_BYTES (64 KiB): the head limit answers before the parser.
        (b"GET /v1/jobs?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431,
         "headers_too_large"),
        (b"FOO /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line", "header", "content-length", "cl-and-te", "70kb-url", "method"],
)
def test_requests_the_parser_refuses_are_problems(api: Server, request_bytes: bytes,
                                                  status: int, code: str) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        got, headers, body = _answer(sock)
    assert got == status and headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["code"] == code and problem["status"] == status
