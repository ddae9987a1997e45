"""Bad input on the upload route: each case ends in a specific 4xx and leaves nothing behind.

Every test runs on local storage and on S3 (moto), where "nothing behind" also means no
multipart upload left open.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, Server, module_server, storage_env


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The module's server (upload limit 1 MiB) on each storage backend."""
    yield from module_server(tmp_path_factory, "api", CONVEYOR_WORKERS="1",
                             CONVEYOR_MAX_UPLOAD_BYTES=str(1024 * 1024), **storage_env(request))


def _leftovers(srv: Server) -> list[str]:
    return srv.unfinished()


def _inputs(srv: Server) -> set[str]:
    return {key.removeprefix("inputs/") for key in srv.stored("inputs/")}


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body  # type: ignore[no-any-return]


def _raw(srv: Server, request: bytes, *, read_timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=read_timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_multipart_upload_is_accepted_with_location(api: Server) -> None:
    data = os.urandom(50_000)
    resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.bin", data)},
                      data={"pipeline": "probe", "priority": "3"})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["priority"] == 3
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert job["input"]["size"] == len(data)


def test_an_upload_in_odd_chunks_is_stored_and_hashed_whole(api: Server) -> None:
    """Odd-sized chunks gathered into the writer's buffers (ingest/stream.py, storage): the
    digest and the stored bytes are the upload's, to the last byte of the limit."""
    data = os.urandom(1024 * 1024)  # the module's limit: four of the local writer's buffers

    def odd_chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 99_991):
            yield data[start:start + 99_991]

    raw = httpx.post(f"{api.url}/v1/jobs?pipeline=probe&filename=r.bin", content=odd_chunks())
    multipart = httpx.post(f"{api.url}/v1/jobs", files={"file": ("m.bin", data)},
                           data={"pipeline": "probe"})
    for resp in (raw, multipart):
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert job["input"]["size"] == len(data)
        assert list(api.stored(f"inputs/{job['id']}").values()) == [data]


def test_raw_body_upload_with_query_parameters(api: Server) -> None:
    data = b'{"a": 1}'
    resp = httpx.post(f"{api.url}/v1/jobs?pipeline=probe&filename=x.json", content=data,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["input"]["filename"] == "x.json"
    assert job["input"]["media_type"] == "application/json"
    assert job["input"]["declared_type"] == "application/json"


def test_empty_file_is_a_valid_upload(api: Server) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("empty.txt", b"")},
                      data={"pipeline": "probe"})
    assert resp.status_code == 202
    job = api.wait_state(resp.json()["id"])
    assert job["state"] == "succeeded"
    assert job["input"]["size"] == 0  # type: ignore[index]


def test_missing_file_part(api: Server) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs", data={"pipeline": "probe"},
                      files={"other": (None, "x")})
    _problem(resp, 422, "no_file")


def test_two_file_parts(api: Server) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs",
                      files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))])
    _problem(resp, 400, "too_many_files")
    assert _leftovers(api) == []


def test_truncated_multipart_body(api: Server) -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhello world")
    resp = httpx.post(f"{api.url}/v1/jobs", content=body,
                      headers={"content-type": "multipart/form-data; boundary=XyZ"})
    _problem(resp, 400, "malformed_body")
    assert _leftovers(api) == []


def test_options_that_are_not_a_json_object(api: Server) -> None:
    for options in ("[1, 2]", "{not json", '"text"'):
        resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                          data={"pipeline": "probe", "options": options})
        _problem(resp, 422, "bad_options")


def test_options_the_pipeline_does_not_know(api: Server) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                      data={"pipeline": "image", "options": json.dumps({"qualiti": 3})})
    _problem(resp, 422, "bad_options")


def test_unknown_pipeline(api: Server) -> None:
    before = _inputs(api)
    resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                      data={"pipeline": "nope"})
    _problem(resp, 422, "unknown_pipeline")
    resp = httpx.post(f"{api.url}/v1/jobs?pipeline=nope", content=b"abc")
    _problem(resp, 422, "unknown_pipeline")
    assert _inputs(api) == before and _leftovers(api) == []


@pytest.mark.parametrize(("field", "value"), [("priority", "x"), ("max_attempts", "0"),
                                               ("timeout_s", "-1"), ("colour", "red")])
def test_bad_parameters(api: Server, field: str, value: str) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                      data={"pipeline": "probe", field: value})
    _problem(resp, 422, "bad_parameter")


def test_content_length_over_the_limit_is_refused_before_the_body(api: Server) -> None:
    head = (b"POST /v1/jobs?pipeline=probe HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: 5000000000\r\n\r\n")
    answer = _raw(api, head)  # no body byte is ever sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"too_large"' in answer


def test_chunked_body_over_the_limit_is_cut_mid_stream(api: Server) -> None:
    before = _inputs(api)

    def chunks() -> object:
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MiB in all, over the 1 MiB limit

    resp = httpx.post(f"{api.url}/v1/jobs?pipeline=probe", content=chunks())  # type: ignore[arg-type]
    _problem(resp, 413, "too_large")
    multipart = httpx.post(f"{api.url}/v1/jobs", files={"file": ("big", b"\0" * 1_200_000)})
    _problem(multipart, 413, "too_large")
    assert _inputs(api) == before and _leftovers(api) == []


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"../../etc/passwd", "passwd"),
        (b"..\\..\\boot.ini", "boot.ini"),
        (b"a\x00.php.jpg", "a.php.jpg"),
        ("\u202egpj.exe".encode(), "gpj.exe"),
        (b"x" * 300 + b".txt", "x" * 251 + ".txt"),
        (b"caf\xe9-\xff.csv", "caf\ufffd-\ufffd.csv"),
        (b"", "upload"),
    ],
)
def test_hostile_file_names_are_cleaned(api: Server, raw: bytes, shown: str) -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + raw +
            b"\"\r\n\r\nhello\r\n--B\r\nContent-Disposition: form-data; name=\"pipeline\""
            b"\r\n\r\nprobe\r\n--B--\r\n")
    resp = httpx.post(f"{api.url}/v1/jobs", content=body,
                      headers={"content-type": "multipart/form-data; boundary=B"})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["input"]["filename"] == shown
    stored = api.stored(f"inputs/{job['id']}")
    assert stored == {f"inputs/{job['id']}": b"hello"}  # under the generated key, nowhere else
    download = httpx.get(f"{api.url}/v1/jobs/{job['id']}/input")
    assert "attachment" in download.headers["content-disposition"]


def test_client_disconnect_mid_upload_leaves_no_job_and_no_file(api: Server) -> None:
    before = _inputs(api)
    jobs_before = httpx.get(f"{api.url}/v1/jobs?limit=500").json()["items"]
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(b"POST /v1/jobs?pipeline=probe HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\nContent-Length: 900000\r\n\r\n")
        sock.sendall(b"\1" * 700_000)  # gone after buffers were written
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _leftovers(api):
        time.sleep(0.05)
    assert _leftovers(api) == []
    assert _inputs(api) == before
    assert httpx.get(f"{api.url}/v1/jobs?limit=500").json()["items"] == jobs_before


def test_too_many_form_fields(api: Server) -> None:
    fields = {f"f{i}": "x" for i in range(1001)}
    resp = httpx.post(f"{api.url}/v1/jobs", data=fields, files={"file": ("a.txt", b"a")})
    _problem(resp, 400, "too_many_fields")


def test_idempotency_key_returns_the_first_job(api: Server) -> None:
    # The same request again (API.md): the first job, 200; a different one: see test_contract.
    headers = {"Idempotency-Key": "order-42"}
    first = httpx.post(f"{api.url}/v1/jobs?pipeline=probe", content=b"one", headers=headers)
    inputs = _inputs(api)
    second = httpx.post(f"{api.url}/v1/jobs?pipeline=probe", content=b"one", headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["input"]["sha256"] == hashlib.sha256(b"one").hexdigest()
    assert _inputs(api) == inputs and _leftovers(api) == []  # the replay kept no copy


def test_unreadable_multipart_boundary(api: Server) -> None:
    resp = httpx.post(f"{api.url}/v1/jobs", content=b"x",
                      headers={"content-type": "multipart/form-data"})
    _problem(resp, 400, "malformed_body")


def test_bad_webhook_url_is_refused(api: Server) -> None:
    for url in ("http://127.0.0.1:9/hook", "file:///etc/passwd", "http://169.254.169.254/"):
        resp = httpx.post(f"{api.url}/v1/jobs", files={"file": ("a.txt", b"a")},
                          data={"pipeline": "probe", "webhook_url": url})
        _problem(resp, 422, "bad_webhook_url")


def _files_starting_with(root: Path, head: bytes) -> dict[Path, int]:
    """Files under ``root`` whose first bytes are ``head``: where an upload's bytes are."""
    found = {}
    for path in root.rglob("*"):
        try:
            if not path.is_file():  # the run dir holds Unix sockets: never open those
                continue
            with open(path, "rb") as fh:
                if fh.read(len(head)) == head:
                    found[path] = path.stat().st_size
        except FileNotFoundError:  # a file renamed or removed while we walk
            continue
    return found


@pytest.mark.parametrize("api", ["local"], indirect=True)  # S3 has no temp files
def test_tmp_dir_is_inside_the_data_dir(api: Server) -> None:
    tmp = api.data_dir / "files" / "tmp"
    assert tmp.is_dir()
    # Find the bytes of an upload that is still being sent: they must be in a temp file under
    # the data dir (same file system as the inputs, so the commit is a rename), not in /tmp.
    data = os.urandom(600_000)
    sent = 400_000
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs?pipeline=probe HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:sent])
        deadline = time.monotonic() + 10
        found: dict[Path, int] = {}
        while time.monotonic() < deadline:
            found = _files_starting_with(api.data_dir, data[:100_000])
            if found:
                break
            time.sleep(0.05)
        elsewhere = sorted(str(p) for p in Path(tempfile.gettempdir()).glob("*.part"))
        assert len(found) == 1, f"no in-flight upload under {api.data_dir}; /tmp has {elsewhere}"
        ((part, size),) = found.items()
        assert part.parent == tmp and part.name.endswith(".part"), part
        assert size <= sent and part.read_bytes()[:size] == data[:size]  # our bytes, in order
        sock.sendall(data[sent:])
        answer = b""
        while not answer.endswith(b"}") and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    job_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"]
    assert not part.exists()  # renamed into place on commit
    assert (api.data_dir / "files" / "inputs" / job_id).read_bytes() == data
