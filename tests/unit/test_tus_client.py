"""The decisions of a resumable upload (``conveyor.client._tus``), answer by answer: no
server, no sleeping; the real-server cases are in tests/uploads/test_client_resumable.py."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from conveyor.client._tus import (
    MAX_RETRY_AFTER_S,
    RETRY_DELAYS,
    ResumableUpload,
    TusRequest,
    UploadStore,
    _InOrderHash,
)
from conveyor.errors import ClientError

BASE = "http://conveyor.test"
UPLOAD = f"{BASE}/v1/uploads/abc"


def _answer(request: TusRequest, status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()},
                          request=httpx.Request(request.method, request.url))


def _upload(tmp_path: Path, size: int = 100, **kw: object) -> ResumableUpload:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    return ResumableUpload(BASE, path, {"pipeline": "probe"}, **kw)  # type: ignore[arg-type]


def _created(up: ResumableUpload) -> TusRequest:
    first = up.first()
    assert (first.method, first.headers["Upload-Length"]) == ("POST", str(up.size))
    patch = up.answer(first, _answer(first, 201, location="/v1/uploads/abc"))
    assert patch is not None and patch.url == UPLOAD
    return patch


def test_a_chunked_upload_walks_the_file(tmp_path: Path) -> None:
    up = _upload(tmp_path, 250, chunk_size=100)
    request = _created(up)
    spans = []
    while request is not None and request.method == "PATCH":
        spans.append((request.offset, request.length))
        end = request.offset + request.length
        extra = {"conveyor_job_id": "J1"} if end == up.size else {}
        request = up.answer(request, _answer(request, 204, upload_offset=str(end), **extra))
    assert spans == [(0, 100), (100, 100), (200, 50)]
    assert request is not None and (request.method, request.url) == ("GET", f"{BASE}/v1/jobs/J1")
    assert up.job_id == "J1" and up.job is None
    # Reading the job back is retried like the rest: a 503, a cut connection, then the job.
    request = up.answer(request, _answer(request, 503))
    assert request is not None and (request.method, request.delay) == ("GET", RETRY_DELAYS[0])
    request = up.failed(request, httpx.ReadError("cut"))
    assert (request.method, request.delay) == ("GET", RETRY_DELAYS[1])
    job = {"id": "J1", "state": "queued"}
    assert up.answer(request, httpx.Response(200, json=job, request=httpx.Request(
        "GET", request.url))) is None
    assert up.job == job


def test_failures_back_off_then_give_up_with_the_last_answer(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    patch = _created(up)
    delays = []
    request = patch
    for _ in RETRY_DELAYS:
        request = up.answer(request, _answer(request, 503))  # type: ignore[assignment]
        assert request.method == "HEAD"
        delays.append(request.delay)
    assert delays == list(RETRY_DELAYS)
    with pytest.raises(ClientError) as gave_up:
        up.answer(request, _answer(request, 503))
    assert gave_up.value.status == 503


def test_progress_starts_the_count_again(tmp_path: Path) -> None:
    up = _upload(tmp_path, 100)
    request = _created(up)
    for step in range(3):
        head = up.answer(request, _answer(request, 500))
        assert head is not None and head.delay == RETRY_DELAYS[0]  # progress since the last
        # The cut PATCH left 10 more bytes on the server each time.
        request = up.answer(head, _answer(head, 200, upload_offset=str(10 * (step + 1)),
                                          upload_length="100"))  # type: ignore[assignment]
        assert request.method == "PATCH" and request.offset == 10 * (step + 1)


def test_retry_after_is_honoured_within_a_cap(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    patch = _created(up)
    head = up.answer(patch, _answer(patch, 429, retry_after="7"))
    assert head is not None and head.delay == 7.0
    again = up.answer(head, _answer(head, 503, retry_after="86400"))
    assert again is not None and again.delay == MAX_RETRY_AFTER_S


def test_an_offset_mismatch_asks_at_once_but_counts(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    request = _created(up)
    for _ in RETRY_DELAYS:
        head = up.answer(request, _answer(request, 409))
        assert head is not None and (head.method, head.delay) == ("HEAD", 0.0)
        request = up.answer(head, _answer(head, 200, upload_offset="0",
                                          upload_length=str(up.size)))  # type: ignore[assignment]
    with pytest.raises(ClientError):
        up.answer(request, _answer(request, 409))


def test_no_answer_is_retried_then_raised(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    first = up.first()
    cut = httpx.ConnectError("refused")
    request = first
    for delay in RETRY_DELAYS:
        request = up.failed(request, cut)
        assert (request.method, request.delay) == ("POST", delay)  # nothing created yet
    with pytest.raises(httpx.ConnectError):
        up.failed(request, cut)


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 415, 422])
def test_answers_no_retry_can_change_are_raised(tmp_path: Path, status: int) -> None:
    up = _upload(tmp_path)
    patch = _created(up)
    with pytest.raises(ClientError) as refused:
        up.answer(patch, httpx.Response(status, json={"code": "some_code", "detail": "no"},
                                        request=httpx.Request("PATCH", UPLOAD)))
    assert (refused.value.status, refused.value.code) == (status, "some_code")


def test_a_garbled_offset_is_a_bad_response(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    patch = _created(up)
    with pytest.raises(ClientError) as bad:
        up.answer(patch, _answer(patch, 204, upload_offset="-1"))
    assert bad.value.code == "bad_response"


def test_a_remembered_upload_of_another_length_starts_afresh(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "s.json")
    up = _upload(tmp_path, store=store)
    store.put(up.fingerprint, UPLOAD)
    resumed = ResumableUpload(BASE, up.path, {"pipeline": "probe"}, store=store)
    head = resumed.first()
    assert (head.method, head.url) == ("HEAD", UPLOAD)
    post = resumed.answer(head, _answer(head, 200, upload_offset="5", upload_length="99"))
    assert post is not None and post.method == "POST"
    assert store.get(up.fingerprint) is None


def test_the_fingerprint_covers_the_file_and_the_parameters(tmp_path: Path) -> None:
    up = _upload(tmp_path)
    same = ResumableUpload(BASE, up.path, {"pipeline": "probe"})
    other_pipeline = ResumableUpload(BASE, up.path, {"pipeline": "image"})
    other_server = ResumableUpload("http://elsewhere", up.path, {"pipeline": "probe"})
    os.utime(up.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = ResumableUpload(BASE, up.path, {"pipeline": "probe"})
    prints = {up.fingerprint, other_pipeline.fingerprint, other_server.fingerprint,
              touched.fingerprint}
    assert same.fingerprint == up.fingerprint and len(prints) == 4


def test_bytes_sent_again_are_hashed_once() -> None:
    data = os.urandom(1000)
    digest = _InOrderHash()
    for start, end in ((0, 300), (200, 600), (600, 600), (550, 1000), (900, 1000)):
        digest.feed(start, data[start:end])
    assert digest.upto == 1000
    assert digest.digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_store_survives_damage_and_drops_old_entries(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "deep" / "s.json")
    assert store.get("x") is None  # no file yet
    store.put("x", UPLOAD)
    assert store.get("x") == UPLOAD
    store.path.write_text("{not json")
    assert store.get("x") is None
    store.path.write_text(json.dumps({"old": {"url": UPLOAD, "at": 1.0},
                                      "odd": "text", "new": {"url": UPLOAD, "at": time.time()}}))
    store.put("y", UPLOAD)
    assert sorted(json.loads(store.path.read_text())) == ["new", "y"]
    store.forget("y")
    assert sorted(json.loads(store.path.read_text())) == ["new"]


def test_a_store_that_cannot_be_written_costs_only_the_resuming(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    store = UploadStore(blocker / "uploads.json")
    store.put("x", UPLOAD)
    store.put("y", UPLOAD)
    store.forget("x")
    assert store.get("x") is None
    warnings = [r for r in caplog.records if "cannot remember uploads" in r.getMessage()]
    assert len(warnings) == 1
