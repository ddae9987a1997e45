"""Live events: one tailer per server process feeds every SSE subscriber.

The tailer wakes on a notification (LISTEN/NOTIFY on PostgreSQL, a datagram socket on SQLite),
reads the new rows of the events table once, and fans them out to bounded per-subscriber
queues. A subscriber that falls too far behind is dropped; its client resumes with
``Last-Event-ID``. No client ever polls the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from conveyor.api.services import Services, services
from conveyor.api.views import iso
from conveyor.models import EventType
from conveyor.notify import EVENTS
from conveyor.problems import problem_schema
from conveyor.store import Event, Store

log = logging.getLogger("conveyor.events")

KEEPALIVE_S = 15.0
QUEUE_SIZE = 2000
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class Wire:
    """An event as sent: encoded once by the hub, shared by every subscriber."""

    id: int
    job_id: str
    terminal: bool
    data: bytes


#: What a subscriber queue carries: an event, a keep-alive, or None (end of stream).
Item = Wire | bytes | None


class Subscriber:
    def __init__(self, job_id: str | None) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = False

    def offer(self, item: Wire | bytes) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, bytes):
                return  # a keep-alive is not needed by a subscriber that has data waiting
            # Too far behind: end this stream; the client reconnects with Last-Event-ID.
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class EventHub:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: Subscribers of every event, and of one job's events (looked up by job id).
        self.everything: set[Subscriber] = set()
        self.by_job: dict[str, set[Subscriber]] = {}
        self.last_id = 0
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def subscribers(self) -> int:
        return len(self.everything) + sum(len(s) for s in self.by_job.values())

    async def start(self) -> None:
        self.last_id = await to_thread.run_sync(self.store.events.last_id)
        self._tasks = [
            asyncio.create_task(self._run(), name="conveyor-event-hub"),
            asyncio.create_task(self._keepalive(), name="conveyor-event-keepalive"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._all():
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def _all(self) -> list[Subscriber]:
        subs = list(self.everything)
        for group in self.by_job.values():
            subs.extend(group)
        return subs

    def subscribe(self, job_id: str | None) -> Subscriber:
        sub = Subscriber(job_id)
        if job_id is None:
            self.everything.add(sub)
        else:
            self.by_job.setdefault(job_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.job_id is None:
            self.everything.discard(sub)
            return
        group = self.by_job.get(sub.job_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self.by_job[sub.job_id]

    async def _keepalive(self) -> None:
        # One timer for every stream, instead of a timeout per subscriber per event.
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            for sub in self._all():
                sub.offer(KEEPALIVE)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        listener = await to_thread.run_sync(self.store.listener, EVENTS)
        loop.add_reader(listener.fileno(), wake.set)
        try:
            while True:
                # The timeout is a safety net only: a missed wake-up costs at most 1 s.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                wake.clear()
                listener.drain()
                try:
                    await self._pump()
                except Exception:
                    # Streams resume from the last event sent once the database answers.
                    log.exception("reading new events failed; retrying")
                    await asyncio.sleep(1.0)
        finally:
            loop.remove_reader(listener.fileno())
            listener.close()

    async def _pump(self) -> None:
        while True:
            batch = await to_thread.run_sync(
                lambda: self.store.events.after(self.last_id, limit=1000)
            )
            if not batch:
                return
            ended = False
            for event in batch:
                self.last_id = event.id
                wire = encode(event)
                ended = ended or wire.terminal
                for sub in self.everything:
                    sub.offer(wire)
                for sub in self.by_job.get(event.job_id, ()):
                    sub.offer(wire)
            if ended:
                # Only a job's end can put a webhook in the outbox: wake its delivery loop.
                self.changed.set()
            if len(batch) < 1000:
                return


def format_event(event: Event) -> bytes:
    data = json.dumps(
        {"job_id": event.job_id, "type": event.type, "at": iso(event.at), "data": event.data,
         "id": event.id},
        separators=(",", ":"),
    )
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def _terminal(event: Event) -> bool:
    try:
        return EventType(event.type).terminal
    except ValueError:
        return False


def encode(event: Event) -> Wire:
    return Wire(event.id, event.job_id, _terminal(event), format_event(event))


async def stream_events(
    request: Request, svc: Services, job_id: str | None, last_event_id: int | None
) -> AsyncIterator[bytes]:
    hub = svc.hub
    # Subscribe before the replay so nothing committed in between is missed; the seam is
    # de-duplicated by event id.
    sub = hub.subscribe(job_id)
    try:
        sent = last_event_id if last_event_id is not None else (0 if job_id else hub.last_id)
        yield b"retry: 2000\n\n"
        if job_id is not None or last_event_id is not None:
            while True:
                batch = await to_thread.run_sync(
                    partial(svc.store.events.after, sent, job_id=job_id, limit=500)
                )
                chunks = []
                for old in batch:
                    sent = old.id
                    chunks.append(format_event(old))
                    if job_id is not None and _terminal(old):
                        yield b"".join(chunks)
                        return
                if chunks:
                    yield b"".join(chunks)
                if len(batch) < 500:
                    break
        while True:
            # Take everything that is waiting and send it as one write.
            items = [await sub.queue.get()]
            while not sub.queue.empty():
                items.append(sub.queue.get_nowait())
            out: list[bytes] = []
            for item in items:
                if item is None:
                    if out:
                        yield b"".join(out)
                    return
                if isinstance(item, bytes):
                    out.append(item)
                    continue
                if item.id <= sent:
                    continue
                sent = item.id
                out.append(item.data)
                if job_id is not None and item.terminal:
                    yield b"".join(out)
                    return
            if out:
                yield b"".join(out)
    finally:
        hub.unsubscribe(sub)


router = APIRouter(prefix="/v1", tags=["events"])
Svc = Annotated[Services, Depends(services)]

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    404: problem_schema(),
    410: problem_schema(),
}


def _parse_last_id(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _sse(gen: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        gen,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs/{job_id}/events", responses=_SSE_DOC, response_class=StreamingResponse,
            summary="Follow one job's events (SSE)")
async def job_events(
    job_id: str,
    request: Request,
    svc: Svc,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="Same as Last-Event-ID, for clients "
                                       "(like EventSource) that cannot set the header")] = None,
) -> StreamingResponse:
    await to_thread.run_sync(svc.load_job, job_id)
    start = _parse_last_id(last_event_id)
    return _sse(stream_events(request, svc, job_id, start if start is not None else after))


@router.get("/events", responses=_SSE_DOC, response_class=StreamingResponse,
            summary="Follow every job's events (SSE)")
async def all_events(
    request: Request,
    svc: Svc,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="Same as Last-Event-ID")] = None,
) -> StreamingResponse:
    start = _parse_last_id(last_event_id)
    return _sse(stream_events(request, svc, None, start if start is not None else after))
