"""Live progress (SSE with replay) and signed webhooks from the outbox, over real HTTP."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.webhooks import Verifier, WebhookVerificationError
from tests.conftest import Server, free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def read_events(url: str, last_id: int | None = None, stop_after: int | None = None,
                timeout: float = 30,
                subscribed: threading.Event | None = None) -> list[dict[str, Any]]:
    """Read an SSE stream; stop after ``stop_after`` events (a client that hangs up).

    ``subscribed`` is set when the stream's first field (``retry:``) arrives: the server sends
    it once it has subscribed, so anything committed afterwards reaches this reader.
    """
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                    if stop_after is not None and len(events) >= stop_after:
                        return events
                current = {}
            elif line.startswith("retry:") and subscribed is not None:
                subscribed.set()
            elif line.startswith("id:"):
                current["id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
    return events


def test_sse_resume_with_last_event_id_sees_every_event_once(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory(CONVEYOR_PROGRESS_INTERVAL_S="0", CONVEYOR_WORKERS="1")
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=progress",
                        content=b"x").json()["id"]
    url = f"{srv.url}/v1/jobs/{job_id}/events"
    rng = random.Random(42)
    seen: list[dict[str, Any]] = []
    last: int | None = None
    for _ in range(100):
        batch = read_events(url, last, stop_after=rng.randint(1, 40))
        seen += batch
        if batch:
            last = batch[-1]["id"]
        if seen and seen[-1]["event"] in ("job.succeeded", "job.failed"):
            break
    assert seen[-1]["event"] == "job.succeeded"
    everything = read_events(url)  # a fresh reader gets the whole history, then the end
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    progress = [e for e in seen if e["event"] == "job.progress"]
    assert len(progress) == 200
    assert progress[-1]["data"]["data"]["fraction"] == 1.0
    assert seen[0]["event"] == "job.queued" and seen[0]["data"]["job_id"] == job_id


def test_stream_of_a_retried_job_replays_every_run_and_ends_after_the_last(
    server_factory: Callable[..., Server], tmp_path: Path,
) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    gate = tmp_path / "gate"
    job_id = httpx.post(f"{srv.url}/v1/jobs", files={"file": ("g.txt", b"g")},
                        data={"pipeline": "gate",
                              "options": json.dumps({"path": str(gate)})}).json()["id"]
    assert srv.wait_state(job_id)["state"] == "failed"
    url = f"{srv.url}/v1/jobs/{job_id}/events"
    first = [e["event"] for e in read_events(url)]
    assert first == ["job.queued", "job.started", "job.failed"]

    gate.touch()
    assert httpx.post(f"{srv.url}/v1/jobs/{job_id}/retry").status_code == 202
    srv.wait_state(job_id, ("running",))
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(read_events(url, subscribed=subscribed)))
    reader.start()
    assert subscribed.wait(10)
    # The first run's job.failed is replayed, but the job runs again: the stream stays open.
    reader.join(0.5)
    assert reader.is_alive()
    Path(f"{gate}.go").touch()
    reader.join(30)
    assert not reader.is_alive()
    assert [e["event"] for e in got] == [
        "job.queued", "job.started", "job.failed",
        "job.queued", "job.started", "job.succeeded",
    ]
    assert got[3]["data"]["data"] == {"retry": True}
    # A reader that comes afterwards gets both runs too, and the stream ends.
    assert [e["id"] for e in read_events(url)] == [e["id"] for e in got]


def test_global_stream_is_live_and_resumable(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    reader = threading.Thread(
        target=lambda: got.extend(read_events(f"{srv.url}/v1/events", stop_after=3,
                                              subscribed=subscribed))
    )
    reader.start()
    # The global stream starts "now": post only once the server has subscribed this reader.
    assert subscribed.wait(20), "the event stream sent nothing"
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop", content=b"x").json()["id"]
    reader.join(20)
    assert [e["event"] for e in got] == ["job.queued", "job.started", "job.succeeded"]
    assert {e["data"]["job_id"] for e in got} == {job_id}
    replay = read_events(f"{srv.url}/v1/events", last_id=got[0]["id"], stop_after=len(got) - 1)
    assert [e["id"] for e in replay] == [e["id"] for e in got[1:]]


class Receiver:
    """A webhook receiver on loopback that verifies every delivery with conveyor.verify."""

    def __init__(self, port: int, status: int = 204) -> None:
        self.port = port
        self.status = status
        self.verifier = Verifier(SECRET)
        self.deliveries: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.httpd: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    receiver.verifier.verify(dict(self.headers.items()), body)
                    receiver.deliveries.append(
                        {"id": self.headers["webhook-id"], "body": json.loads(body)}
                    )
                except WebhookVerificationError as exc:
                    receiver.rejected.append(str(exc))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port())
    yield rec
    rec.down()


def _hook_env(port: int) -> dict[str, str]:
    return {
        "CONVEYOR_WEBHOOK_SECRET": SECRET,
        "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
        "CONVEYOR_WEBHOOK_SCHEDULE_SCALE": "0.01",  # 0, 0.05 s, 3 s, 18 s, ...
        "CONVEYOR_WORKERS": "1",
    }


def _wait(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_signed_webhook_is_delivered_and_verified(
    server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    receiver.up()
    srv = server_factory(**_hook_env(receiver.port))
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url={hook}",
                        content=b"x").json()["id"]
    _wait(lambda: len(receiver.deliveries) == 1)
    assert receiver.rejected == []
    body = receiver.deliveries[0]["body"]
    assert body["type"] == "job.succeeded" and body["data"]["job_id"] == job_id
    (attempt,) = httpx.get(f"{srv.url}/v1/jobs/{job_id}/deliveries").json()
    assert attempt["outcome"] == "delivered" and attempt["status_code"] == 204


def test_receiver_down_then_up_gets_exactly_one_delivery(
    server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    srv = server_factory(**_hook_env(receiver.port))
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url={hook}",
                        content=b"x").json()["id"]
    deliveries = f"{srv.url}/v1/jobs/{job_id}/deliveries"
    _wait(lambda: len(httpx.get(deliveries).json()) >= 2)  # two refused attempts
    receiver.up()
    _wait(lambda: len(receiver.deliveries) == 1)
    time.sleep(1)
    assert len(receiver.deliveries) == 1 and receiver.rejected == []
    attempts = httpx.get(deliveries).json()
    assert [a["outcome"] for a in attempts][-1] == "delivered"
    assert all(a["error"] for a in attempts[:-1])


def test_delivery_survives_a_server_restart(
    server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    srv = server_factory(**_hook_env(receiver.port))
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url={hook}",
                        content=b"x").json()["id"]
    _wait(lambda: len(httpx.get(f"{srv.url}/v1/jobs/{job_id}/deliveries").json()) >= 2)
    srv.kill()  # the next try is seconds away: it lives only in the outbox
    receiver.up()
    again = server_factory(data_dir=srv.data_dir, **_hook_env(receiver.port))
    _wait(lambda: len(receiver.deliveries) == 1)
    assert receiver.deliveries[0]["body"]["data"]["job_id"] == job_id
    assert httpx.get(f"{again.url}/v1/jobs/{job_id}/deliveries").json()[-1]["outcome"] == (
        "delivered"
    )


def test_410_stops_deliveries_to_that_endpoint(
    server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    receiver.status = 410
    receiver.up()
    srv = server_factory(**_hook_env(receiver.port))
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    job_id = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url={hook}",
                        content=b"x").json()["id"]
    _wait(lambda: len(receiver.deliveries) == 1)
    time.sleep(0.5)
    (attempt,) = httpx.get(f"{srv.url}/v1/jobs/{job_id}/deliveries").json()
    assert attempt["outcome"] == "disabled"


def test_allow_list_admits_loopback_only_when_configured(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory(CONVEYOR_WEBHOOK_ALLOW_PRIVATE="127.0.0.0/8", CONVEYOR_WORKERS="0")
    ok = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url=http://127.0.0.1:1/h",
                    content=b"x")
    assert ok.status_code == 202
    private = httpx.post(f"{srv.url}/v1/jobs?pipeline=noop&webhook_url=http://10.0.0.1/h",
                         content=b"x")
    assert private.status_code == 422 and private.json()["code"] == "bad_webhook_url"
