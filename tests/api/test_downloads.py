"""Downloads over real HTTP: streamed from storage, ETag/304, one Range (206/416), HEAD."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests import objects
from tests.conftest import BACKENDS, Server, module_server, storage_env

DATA = os.urandom(300_000)  # larger than one storage read chunk


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "downloads", CONVEYOR_WORKERS="1",
                             **storage_env(request))


@pytest.fixture(scope="module")
def job(srv: Server) -> dict[str, object]:
    """A job whose artifact is a copy of its input, so both downloads serve DATA."""
    resp = httpx.post(f"{srv.url}/v1/jobs", params={"pipeline": "echo", "filename": "in.bin"},
                      content=DATA)
    assert resp.status_code == 202, resp.text
    done = srv.wait_state(str(resp.json()["id"]))
    assert done["state"] == "succeeded", done
    return done


def _urls(srv: Server, job: dict[str, object]) -> list[str]:
    (art,) = job["artifacts"]  # type: ignore[misc]
    return [f"{srv.url}/v1/jobs/{job['id']}/input", f"{srv.url}{art['url']}"]


def _common(resp: httpx.Response) -> None:
    assert resp.headers["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["content-security-policy"] == "sandbox"


def test_whole_file_and_304(srv: Server, job: dict[str, object]) -> None:
    for url in _urls(srv, job):
        full = httpx.get(url)
        assert full.status_code == 200 and full.content == DATA, url
        assert full.headers["content-length"] == str(len(DATA))
        _common(full)
        again = httpx.get(url, headers={"If-None-Match": f'"x", {full.headers["etag"]}'})
        assert again.status_code == 304 and again.content == b""
        assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("header,start,end", [
    ("bytes=10-19", 10, 20), ("bytes=0-0", 0, 1), ("bytes=-100", len(DATA) - 100, len(DATA)),
    ("bytes=299990-", 299_990, len(DATA)), ("bytes=1000-999999", 1000, len(DATA)),
    ("bytes=1-262200", 1, 262_201),
    # Numbers of more digits than int() converts (4,300): past any file, not a 500.
    ("bytes=5-" + "9" * 5000, 5, len(DATA)), ("bytes=-" + "9" * 5000, 0, len(DATA)),
    ("bytes=" + "0" * 5000 + "7-9", 7, 10),
])
def test_single_range_is_206(srv: Server, job: dict[str, object], header: str, start: int,
                             end: int) -> None:
    for url in _urls(srv, job):
        part = httpx.get(url, headers={"Range": header})
        assert part.status_code == 206, (url, part.text[:200])
        assert part.content == DATA[start:end]
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
        assert part.headers["content-length"] == str(end - start)
        _common(part)


@pytest.mark.parametrize("header", ["bytes=999999-", f"bytes={len(DATA)}-", "bytes=-0",
                                    "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_range_is_416_problem(srv: Server, job: dict[str, object],
                                            header: str) -> None:
    for url in _urls(srv, job):
        resp = httpx.get(url, headers={"Range": header})
        assert resp.status_code == 416, url
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.headers["content-range"] == f"bytes */{len(DATA)}"
        body = resp.json()
        assert body["code"] == "range_not_satisfiable" and body["status"] == 416


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "bytes=0-1,4-5", "lines=1-2"])
def test_malformed_range_is_ignored(srv: Server, job: dict[str, object], header: str) -> None:
    for url in _urls(srv, job):
        resp = httpx.get(url, headers={"Range": header})
        assert resp.status_code == 200 and resp.content == DATA, url


def test_if_range(srv: Server, job: dict[str, object]) -> None:
    for url in _urls(srv, job):
        etag = httpx.head(url).headers["etag"]
        fresh = httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert fresh.status_code == 206 and fresh.content == DATA[:10]
        stale = httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == DATA


def test_head_has_the_headers_and_no_body(srv: Server, job: dict[str, object]) -> None:
    for url in _urls(srv, job):
        get = httpx.get(url)
        for headers in ({}, {"Range": "bytes=0-9"}):  # HEAD ignores Range
            head = httpx.head(url, headers=headers)
            assert head.status_code == 200 and head.content == b"", url
            _common(head)
            for name in ("content-length", "content-type", "content-disposition"):
                assert head.headers[name] == get.headers[name], name
    gone = httpx.head(f"{srv.url}/v1/jobs/{job['id']}/artifacts/nope.bin")
    assert gone.status_code == 404


def test_active_types_are_served_as_text(srv: Server) -> None:
    page = b"<html><script>alert(1)</script></html>"
    resp = httpx.post(f"{srv.url}/v1/jobs", content=page, params={
        "pipeline": "echo", "options": json.dumps({"name": "p.html", "media_type": "text/html"})})
    assert resp.status_code == 202, resp.text
    job = srv.wait_state(str(resp.json()["id"]))
    (art,) = job["artifacts"]  # type: ignore[misc]
    got = httpx.get(f"{srv.url}{art['url']}")
    assert got.content == page
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-security-policy"] == "sandbox"


def test_openapi_declares_206_416_and_head(srv: Server) -> None:
    paths = httpx.get(f"{srv.url}/openapi.json").json()["paths"]
    for path in ("/v1/jobs/{job_id}/input", "/v1/jobs/{job_id}/artifacts/{name}"):
        assert {"get", "head"} <= set(paths[path]), path
        for method in ("get", "head"):
            responses = paths[path][method]["responses"]
            assert {"200", "206", "304", "416"} <= set(responses), (path, method)
            assert "application/problem+json" in responses["416"]["content"]


def test_redirect_mode_answers_307_to_a_presigned_url(
        server_factory: Callable[..., Server], moto: objects.Moto) -> None:
    srv = server_factory(CONVEYOR_WORKERS="0", CONVEYOR_DOWNLOADS="redirect", **moto.env())
    resp = httpx.post(f"{srv.url}/v1/jobs", params={"pipeline": "probe", "filename": "in.bin"},
                      content=DATA)
    assert resp.status_code == 202, resp.text
    url = f"{srv.url}/v1/jobs/{resp.json()['id']}/input"
    for method in ("GET", "HEAD"):
        moved = httpx.request(method, url)
        assert moved.status_code == 307, moved.text
        assert "X-Amz-Signature=" in moved.headers["location"]
    assert httpx.get(moved.headers["location"]).content == DATA  # straight from the bucket


def test_redirect_mode_on_local_storage_still_proxies(
        server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="0", CONVEYOR_DOWNLOADS="redirect")
    resp = httpx.post(f"{srv.url}/v1/jobs", params={"pipeline": "probe"}, content=b"abc")
    got = httpx.get(f"{srv.url}/v1/jobs/{resp.json()['id']}/input")
    assert got.status_code == 200 and got.content == b"abc"
    assert got.headers["x-content-type-options"] == "nosniff"
