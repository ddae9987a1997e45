"""tus requests against a real server: each refusal has its documented status, appends
nothing and leaves the upload usable; the last byte makes exactly one job."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.uploads.conftest import (
    LIMIT,
    OCTETS,
    TUS,
    create,
    metadata,
    offset_of,
    patch,
    staged,
)


def _b64digest(name: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(name, data).digest()).decode()


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code


def test_options_advertise_the_extensions(tus_api: Server) -> None:
    with tus_api.client() as c:
        r = c.options("/v1/uploads")
    assert r.status_code == 204
    assert r.headers["Tus-Version"] == "1.0.0"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "expiration", "checksum", "termination"}
    assert r.headers["Tus-Checksum-Algorithm"] == "sha256,sha1,md5"
    assert r.headers["Tus-Max-Size"] == str(LIMIT)


def test_upload_in_chunks_makes_one_job(tus_api: Server) -> None:
    data = bytes(range(256)) * 1000
    with tus_api.client() as c:
        path = create(c, len(data), filename="bytes.bin", pipeline="probe",
                      filetype="application/octet-stream")
        head = c.head(path, headers=TUS)
        assert head.headers["Upload-Offset"] == "0"
        assert head.headers["Upload-Length"] == str(len(data))
        assert head.headers["Cache-Control"] == "no-store"
        assert "Upload-Expires" in head.headers
        assert head.headers["Upload-Metadata"].startswith("filename ")
        assert "Conveyor-Job-Id" not in head.headers
        for start in range(0, len(data), 100_000):
            chunk = data[start:start + 100_000]
            r = patch(c, path, start, chunk, **{"Upload-Checksum":
                                               f"sha256 {_b64digest('sha256', chunk)}"})
            assert r.status_code == 204, r.text
            assert r.headers["Upload-Offset"] == str(start + len(chunk))
        job_id = r.headers["Conveyor-Job-Id"]
        assert r.headers["Link"] == f'</v1/jobs/{job_id}>; rel="job"'
        head = c.head(path, headers=TUS)
        assert head.headers["Conveyor-Job-Id"] == job_id
        assert head.headers["Upload-Offset"] == str(len(data))
        # A repeat of the last PATCH's answer (the client lost it): no second job.
        again = patch(c, path, len(data), b"")
        assert again.status_code == 204 and again.headers["Conveyor-Job-Id"] == job_id
        job = tus_api.wait_state(job_id)
        assert job["state"] == "succeeded"
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert job["input"]["filename"] == "bytes.bin"  # type: ignore[index]
        assert job["pipeline"] == "probe"
        assert c.get(f"/v1/jobs/{job_id}/input").content == data
        listed = c.get("/v1/jobs", params={"limit": 500}).json()["items"]
        assert sum(1 for j in listed if j["id"] == job_id) == 1


def test_creation_with_upload_and_method_override(tus_api: Server) -> None:
    with tus_api.client() as c:
        r = c.post("/v1/uploads", content=b"hello ", headers={
            **OCTETS, "Upload-Length": "11", "Upload-Metadata": metadata(filename="h.txt")})
        assert r.status_code == 201, r.text
        assert r.headers["Upload-Offset"] == "6"
        path = r.headers["Location"]
        r = c.post(path, content=b"world", headers={
            **OCTETS, "Upload-Offset": "6", "X-HTTP-Method-Override": "PATCH"})
        assert r.status_code == 204, r.text
        job = tus_api.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["input"]["sha256"] == hashlib.sha256(b"hello world").hexdigest()  # type: ignore[index]
        # The first chunk's checksum is checked too.
        r = c.post("/v1/uploads", content=b"abc", headers={
            **OCTETS, "Upload-Length": "6", "Upload-Checksum": f"md5 {_b64digest('md5', b'abc')}"})
        assert r.status_code == 201 and r.headers["Upload-Offset"] == "3"
        wrong = c.post("/v1/uploads", content=b"abc", headers={
            **OCTETS, "Upload-Length": "6", "Upload-Checksum": f"md5 {_b64digest('md5', b'x')}"})
        _problem(wrong, 460, "checksum_mismatch")


def test_empty_upload_is_complete_at_creation(tus_api: Server) -> None:
    with tus_api.client() as c:
        r = c.post("/v1/uploads", headers={**TUS, "Upload-Length": "0",
                                           "Upload-Metadata": metadata(filename="e")})
    assert r.status_code == 201
    job = tus_api.wait_state(r.headers["Conveyor-Job-Id"])
    assert job["input"]["size"] == 0  # type: ignore[index]


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
def test_checksum_mismatch_appends_nothing(tus_api: Server, algorithm: str) -> None:
    with tus_api.client() as c:
        path = create(c, 10)
        assert patch(c, path, 0, b"abcde").status_code == 204
        wrong = patch(c, path, 5, b"fghij",
                      **{"Upload-Checksum": f"{algorithm} {_b64digest(algorithm, b'other')}"})
        _problem(wrong, 460, "checksum_mismatch")
        assert offset_of(c, path) == 5
        right = patch(c, path, 5, b"fghij",
                      **{"Upload-Checksum": f"{algorithm} {_b64digest(algorithm, b'fghij')}"})
        assert right.status_code == 204
        job = tus_api.wait_state(right.headers["Conveyor-Job-Id"])
    assert job["input"]["sha256"] == hashlib.sha256(b"abcdefghij").hexdigest()  # type: ignore[index]


def test_refusals_append_nothing(tus_api: Server) -> None:
    with tus_api.client() as c:
        path = create(c, 10)
        assert patch(c, path, 0, b"abc").status_code == 204
        _problem(patch(c, path, 0, b"xyz"), 409, "offset_mismatch")
        _problem(patch(c, path, 7, b"xyz"), 409, "offset_mismatch")
        _problem(c.patch(path, content=b"def", headers={
            **TUS, "Upload-Offset": "3", "Content-Type": "application/octet-stream"}),
            415, "unsupported_media_type")
        _problem(patch(c, path, 3, b"d" * 8), 413, "too_large")
        _problem(patch(c, path, 3, b"def", **{"Upload-Checksum": "crc32 AAAA"}),
                 400, "bad_checksum_algorithm")
        _problem(c.patch(path, content=b"def", headers={
            **OCTETS, "Tus-Resumable": "0.2.2", "Upload-Offset": "3"}),
            412, "unsupported_version")
        _problem(c.patch(path, content=b"def", headers=OCTETS), 400, "bad_request")
        assert offset_of(c, path) == 3

        # Past Upload-Length without a Content-Length (chunked): refused mid-stream.
        def body() -> Iterator[bytes]:
            yield b"d" * 4
            yield b"e" * 4

        _problem(c.patch(path, content=body(), headers={**OCTETS, "Upload-Offset": "3"}),
                 413, "too_large")
        assert offset_of(c, path) == 3
        r = patch(c, path, 3, b"defghij")
        assert r.status_code == 204
        job = tus_api.wait_state(r.headers["Conveyor-Job-Id"])
    assert job["input"]["sha256"] == hashlib.sha256(b"abcdefghij").hexdigest()  # type: ignore[index]


def test_creation_refusals(tus_api: Server) -> None:
    before = staged(tus_api)
    with tus_api.client() as c:
        def post(length: str | None = "10", meta: str | None = None,
                 **headers: str) -> httpx.Response:
            h = {**TUS, **headers}
            if length is not None:
                h["Upload-Length"] = length
            if meta is not None:
                h["Upload-Metadata"] = meta
            return c.post("/v1/uploads", headers=h)

        _problem(post(str(LIMIT + 1)), 413, "too_large")
        _problem(post(None), 400, "bad_request")
        _problem(post("-5"), 400, "bad_request")
        _problem(post(None, **{"Upload-Defer-Length": "1"}), 400, "bad_request")
        _problem(post(meta="filename ***"), 400, "bad_metadata")
        _problem(post(meta=metadata(pipeline="nope")), 422, "unknown_pipeline")
        _problem(post(meta=metadata(pipeline="probe", options="[1]")), 422, "bad_options")
        _problem(post(meta=metadata(pipeline="probe", options='{"x": 1')), 422, "bad_options")
        _problem(post(meta=metadata(priority="high")), 422, "bad_parameter")
        _problem(post(meta=metadata(max_attempts="0")), 422, "bad_parameter")
        _problem(post(meta=metadata(webhook_url="http://127.0.0.1:1/x")), 422,
                 "bad_webhook_url")
        _problem(post(**{"Tus-Resumable": "2.0.0"}), 412, "unsupported_version")
        assert post(**{"Tus-Resumable": "2.0.0"}).headers["Tus-Version"] == "1.0.0"
        # Other clients' own keys are ignored, not refused.
        assert post(meta=metadata(relativePath="x/y", name="y.txt")).status_code == 201
    assert staged(tus_api) == before  # nothing staged


def test_unknown_and_terminated(tus_api: Server) -> None:
    with tus_api.client() as c:
        for path in ("/v1/uploads/01M8Q4TCAX46S3JARPTE2TD0WP", "/v1/uploads/..%2Fetc",
                     "/v1/uploads/nope"):
            assert c.head(path, headers=TUS).status_code == 404
            _problem(patch(c, path, 0, b"x"), 404, "not_found")
        before = staged(tus_api)
        path = create(c, 10)
        assert patch(c, path, 0, b"abc").status_code == 204
        [new] = set(staged(tus_api)) - set(before)
        assert staged(tus_api)[new] == b"abc"
        r = c.delete(path, headers=TUS)
        assert r.status_code == 204 and r.headers["Tus-Resumable"] == "1.0.0"
        assert new not in staged(tus_api)
        head = c.head(path, headers=TUS)
        assert head.status_code == 410 and "Upload-Offset" not in head.headers
        _problem(patch(c, path, 3, b"def"), 410, "gone")
        _problem(c.delete(path, headers=TUS), 410, "gone")


def test_racing_patches_never_interleave(tus_api: Server) -> None:
    """A slow PATCH holds the upload; a second one meanwhile gets 423 (or 409), appends
    nothing; the first one's bytes all land."""
    size = 64 * 1024
    with tus_api.client() as c:
        path = create(c, size * 2)
        started = threading.Event()
        answers: list[httpx.Response] = []

        def slow() -> Iterator[bytes]:
            yield b"a" * 1024
            started.set()
            time.sleep(1.0)
            yield b"a" * (size - 1024)

        def first() -> None:
            with tus_api.client() as c1:
                answers.append(c1.patch(path, content=slow(),
                                        headers={**OCTETS, "Upload-Offset": "0"}))

        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(10)
        time.sleep(0.3)  # the first request's bytes reach the server and it takes the lock
        second = patch(c, path, 0, b"b" * size)
        thread.join(30)
        assert second.status_code in (423, 409), second.text
        assert second.json()["code"] in ("locked", "offset_mismatch")
        assert answers[0].status_code == 204 and answers[0].headers["Upload-Offset"] == str(size)
        r = patch(c, path, size, b"c" * size)
        assert r.status_code == 204
        job_id = r.headers["Conveyor-Job-Id"]
        tus_api.wait_state(job_id)
        assert c.get(f"/v1/jobs/{job_id}/input").content == b"a" * size + b"c" * size
