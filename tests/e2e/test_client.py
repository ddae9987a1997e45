"""The Python client (sync and async) against a real ``conveyor serve`` subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conveyor.client import AsyncClient, Client, SSEParser, WaitPlan
from conveyor.errors import ClientError
from tests.conftest import BACKENDS, Server, module_server, storage_env


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (each start costs seconds), on each storage backend."""
    yield from module_server(tmp_path_factory, "client", **storage_env(request))


@pytest.fixture
def client(live: Server) -> Iterator[Client]:
    with Client(live.url, timeout=30) as c:
        yield c


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_jpeg(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    img.save(path, "JPEG", quality=90)
    return path


def make_text(path: Path, lines: int = 20_000) -> Path:
    path.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(lines)))
    return path


# -- pure parts -------------------------------------------------------------------------------


def feed_all(parser: SSEParser, text: str) -> list[dict[str, Any]]:
    return [ev for line in text.split("\n") if (ev := parser.feed(line)) is not None]


def test_sse_parser_fields_comments_and_multiline_data() -> None:
    text = (
        "retry: 2000\n\n"
        ": keep-alive\n\n"
        'id: 7\nevent: job.progress\ndata: {"data": {"fraction": 0.5}}\n\n'
        "data: first\ndata: second\n\n"
        "id: 9\nevent: job.succeeded\ndata:{\"ok\": true}\n\n"
    )
    events = feed_all(SSEParser(), text)
    assert events == [
        {"id": "7", "event": "job.progress", "data": {"data": {"fraction": 0.5}}},
        # The last id carries over; the default type is "message"; non-JSON data stays text.
        {"id": "7", "event": "message", "data": "first\nsecond"},
        {"id": "9", "event": "job.succeeded", "data": {"ok": True}},
    ]


def test_wait_plan_reconnects_after_events_and_polls_when_sse_never_works() -> None:
    plan = WaitPlan(timeout=None)
    plan.stream_started()
    assert not plan.saw({"id": "3", "event": "job.started"})
    plan.stream_ended(failed=True)
    assert plan.follow and plan.last_event_id == "3"  # reconnect with Last-Event-ID
    plan.stream_started()
    plan.stream_ended(failed=True)
    assert not plan.follow and plan.fell_back  # nothing came: poll
    assert [round(plan.next_delay(), 3) for _ in range(8)] == [
        0.2, 0.3, 0.45, 0.675, 1.013, 1.519, 2.0, 2.0]


def test_wait_plan_deadline() -> None:
    now = [100.0]
    plan = WaitPlan(timeout=1.0, clock=lambda: now[0])
    assert plan.read_timeout() == 1.0
    now[0] = 101.5
    with pytest.raises(TimeoutError):
        plan.remaining()


def test_submit_streams_a_raw_body_with_content_length(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 200_000)
    got: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        got["request"], got["body"] = request, request.read()
        return httpx.Response(202, json={"id": "j1", "state": "queued"})

    with Client("http://conveyor.test", transport=httpx.MockTransport(handler)) as c:
        c.submit(src, pipeline="probe", options={"a": [1]}, priority=3, idempotency_key="k1")
    request: httpx.Request = got["request"]
    assert request.url.path == "/v1/jobs"
    assert dict(request.url.params) == {"pipeline": "probe", "filename": "blob.bin",
                                        "options": '{"a":[1]}', "priority": "3"}
    assert request.headers["content-length"] == "200000"
    assert "transfer-encoding" not in request.headers
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["idempotency-key"] == "k1"
    assert got["body"] == src.read_bytes()


def test_errors_without_problem_json_and_bad_checksums(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/artifacts/a.txt"):
            return httpx.Response(200, content=b"tampered", headers={"ETag": f'"{"0" * 64}"'})
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with Client("http://conveyor.test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ClientError) as info:
            c.get("j1")
        assert (info.value.status, info.value.code) == (502, "http_502")
        assert "Bad Gateway" in info.value.detail
        with pytest.raises(ClientError) as info:
            c.download("j1", "a.txt", tmp_path)
        assert info.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


# -- against the server -----------------------------------------------------------------------


def test_submit_image_wait_and_download(client: Client, tmp_path: Path) -> None:
    src = make_jpeg(tmp_path / "gradient.jpg")
    job = client.submit(src, pipeline="image", options={"sizes": [256]})
    assert job["state"] in ("queued", "running")
    assert job["input"]["filename"] == "gradient.jpg"
    assert job["input"]["sha256"] == sha256(src)

    seen: list[dict[str, Any]] = []
    done = client.wait(job["id"], timeout=60, on_event=seen.append)
    assert done["state"] == "succeeded", done
    kinds = [ev["event"] for ev in seen]
    assert kinds[0] == "job.queued" and kinds[-1] == "job.succeeded"
    assert "job.started" in kinds

    (art,) = [a for a in done["artifacts"] if a["name"] == "w256.webp"]
    saved = client.download(job["id"], "w256.webp", f"{tmp_path}/out/")  # a new directory
    assert saved == tmp_path / "out" / "w256.webp"
    assert sha256(saved) == art["sha256"]
    assert saved.stat().st_size == art["size"]

    again = client.download(job["id"], "w256.webp", tmp_path / "copy.webp")  # a file path
    assert sha256(again) == art["sha256"]
    original = client.download_input(job["id"], tmp_path / "out")
    assert original.name == "gradient.jpg" and sha256(original) == sha256(src)


def test_async_client_probe_with_upload_progress(live: Server, tmp_path: Path) -> None:
    src = make_text(tmp_path / "notes.txt")
    size = src.stat().st_size
    assert size > 3 * 64 * 1024  # several chunks
    calls: list[tuple[int, int]] = []

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
        async with AsyncClient(live.url) as ac:
            job = await ac.submit(src, pipeline="probe", on_progress=lambda s, t: calls.append(
                (s, t)), idempotency_key=f"notes-{tmp_path.name}")
            seen: list[dict[str, Any]] = []
            done = await ac.wait(job["id"], timeout=60, on_event=seen.append)
            saved = await ac.download_input(job["id"], f"{tmp_path}/back/")
            listed = [j["id"] async for j in ac.iter_jobs(pipeline="probe", limit=1)]
            assert job["id"] in listed
            events = [ev async for ev in ac.events(job["id"])]
            assert events[-1]["event"] == "job.succeeded"
            assert [ev["event"] for ev in events] == [ev["event"] for ev in seen]
            return done, seen, saved

    done, seen, saved = asyncio.run(scenario())
    assert done["state"] == "succeeded", done
    assert done["result"] is not None
    assert seen[-1]["event"] == "job.succeeded"
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert len(calls) > 3 and all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert saved == tmp_path / "back" / "notes.txt" and sha256(saved) == sha256(src)


def test_client_errors_carry_codes(client: Client, live: Server, tmp_path: Path) -> None:
    src = make_text(tmp_path / "a.txt", lines=3)
    with pytest.raises(ClientError) as info:
        client.submit(src, pipeline="no-such-pipeline")
    assert (info.value.status, info.value.code) == (422, "unknown_pipeline")
    with pytest.raises(ClientError) as info:
        client.submit(src, pipeline="probe", options={"nope": 1, "nested": {"x": [1]}},
                      priority=10_000)
    assert info.value.status == 422
    with pytest.raises(ClientError) as info:
        client.get("01J0000000000000000000NONE")
    assert (info.value.status, info.value.code) == (404, "not_found")
    with pytest.raises(ClientError) as info:
        client.wait("01J0000000000000000000NONE", timeout=10)
    assert info.value.code == "not_found"

    async def missing() -> None:
        async with AsyncClient(live.url) as ac:
            await ac.cancel("01J0000000000000000000NONE")

    with pytest.raises(ClientError) as info:
        asyncio.run(missing())
    assert (info.value.status, info.value.code) == (404, "not_found")


class FlakyClient(Client):
    """Breaks the SSE stream on purpose: ``mode`` says how."""

    def __init__(self, url: str, mode: str) -> None:
        super().__init__(url)
        self.mode = mode
        self.streams = 0
        self.polls = 0

    def _stream_events(self, job_id: str, last_event_id: str | None,
                       read_timeout: float | None) -> Generator[dict[str, Any] | None]:
        self.streams += 1
        if self.mode == "always" or (self.mode == "once" and self.streams == 1):
            raise httpx.ConnectError("SSE is down")
        inner = super()._stream_events(job_id, last_event_id, read_timeout)
        if self.mode == "midway" and self.streams == 1:
            got = 0
            for item in inner:
                yield item
                got += item is not None
                if got == 2:
                    inner.close()
                    raise httpx.ReadError("connection reset mid-stream")
        yield from inner

    def get(self, job_id: str) -> dict[str, Any]:
        self.polls += 1
        return super().get(job_id)


@pytest.mark.parametrize("mode", ["once", "always"])
def test_wait_falls_back_to_polling_when_sse_fails(live: Server, tmp_path: Path,
                                                   mode: str) -> None:
    src = make_text(tmp_path / "s.txt", lines=3)
    with FlakyClient(live.url, mode) as flaky:
        job = flaky.submit(src, pipeline="sleep", options={"seconds": 1.0, "steps": 4})
        done = flaky.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert flaky.streams == 1
    assert flaky.polls >= 2  # it really polled while the job ran


def test_wait_resumes_a_broken_stream_with_last_event_id(live: Server, tmp_path: Path) -> None:
    src = make_text(tmp_path / "s.txt", lines=3)
    seen: list[dict[str, Any]] = []
    with FlakyClient(live.url, "midway") as flaky:
        job = flaky.submit(src, pipeline="sleep", options={"seconds": 1.0, "steps": 5})
        done = flaky.wait(job["id"], timeout=60, on_event=seen.append)
    assert done["state"] == "succeeded", done
    assert flaky.streams == 2
    ids = [int(ev["id"]) for ev in seen]
    assert ids == sorted(set(ids))  # resumed after the last id: nothing twice, nothing lost
    kinds = [ev["event"] for ev in seen]
    assert kinds[0] == "job.queued" and kinds[-1] == "job.succeeded"
    assert kinds.count("job.progress") == 5


def test_cancel_a_sleeping_job(client: Client, tmp_path: Path) -> None:
    src = make_text(tmp_path / "s.txt", lines=3)
    job = client.submit(src, pipeline="sleep", options={"seconds": 30, "steps": 300})
    with pytest.raises(TimeoutError):
        client.wait(job["id"], timeout=0.5)
    cancelled = client.cancel(job["id"])
    assert cancelled["state"] in ("cancelled", "running")
    done = client.wait(job["id"], timeout=30)
    assert done["state"] == "cancelled", done
    with pytest.raises(ClientError) as info:
        client.cancel(job["id"])
    assert (info.value.status, info.value.code) == (409, "conflict")

    retried = client.retry(job["id"])
    assert retried["state"] == "queued" or retried["state"] == "running"
    client.cancel(job["id"])
    assert client.wait(job["id"], timeout=30)["state"] == "cancelled"
    client.delete(job["id"])
    with pytest.raises(ClientError) as info:
        client.get(job["id"])
    assert (info.value.status, info.value.code) == (410, "gone")


def test_iter_jobs_follows_cursors(client: Client, tmp_path: Path) -> None:
    src = make_text(tmp_path / "n.txt", lines=3)
    ids = [client.submit(src, pipeline="noop", filename=f"n{i}.txt")["id"] for i in range(5)]
    page = client.list(pipeline="noop", limit=2)
    assert len(page["items"]) == 2 and page["next_cursor"]
    listed = [job["id"] for job in client.iter_jobs(pipeline="noop", limit=2)]
    assert len(listed) == len(set(listed))
    assert listed[: len(ids)] == ids[::-1]  # newest first, across three pages
    names = {job["input"]["filename"] for job in client.iter_jobs(pipeline="noop", limit=2)}
    assert {f"n{i}.txt" for i in range(5)} <= names
    assert any(p["name"] == "image" for p in client.pipelines())
