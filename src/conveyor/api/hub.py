"""The event hub: one tailer per server process feeds every SSE subscriber.

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
from dataclasses import dataclass

from anyio import to_thread

from conveyor.api.views import iso
from conveyor.models import EventType
from conveyor.notify import EVENTS
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
    tenant_id: str | None = None


#: What a subscriber queue carries: an event, a keep-alive, or None (end of stream).
Item = Wire | bytes | None


class Subscriber:
    """One SSE stream's bounded queue; dropped (ended) when it falls too far behind."""

    def __init__(self, job_id: str | None, tenant_id: str | None = None) -> None:
        self.job_id = job_id
        #: A global stream's tenant: it is offered only that tenant's events.
        self.tenant_id = tenant_id
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

    def end(self) -> None:
        """End this stream now (whatever is queued is dropped; the client resumes by id)."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventHub:
    """Tails the events table once per process and fans new events out to subscribers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: Subscribers of every event, and of one job's events (looked up by job id).
        self.everything: set[Subscriber] = set()
        self.by_job: dict[str, set[Subscriber]] = {}
        self.last_id = 0
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Set by :meth:`end_all` (draining): a stream that subscribes after it ends at once.
        self.ended = False

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

    def end_all(self) -> None:
        """End every open stream, and every later one (the server is draining)."""
        self.ended = True
        for sub in self._all():
            sub.end()

    def subscribe(self, job_id: str | None, tenant_id: str | None = None) -> Subscriber:
        sub = Subscriber(job_id, tenant_id)
        if self.ended:
            sub.end()
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
                    if sub.tenant_id == wire.tenant_id:
                        sub.offer(wire)
                for sub in self.by_job.get(event.job_id, ()):
                    sub.offer(wire)
            if ended:
                # Only a job's end can put a webhook in the outbox: wake its delivery loop.
                self.changed.set()
            if len(batch) < 1000:
                return


def format_event(event: Event) -> bytes:
    """One event as an SSE frame (``id``, ``event``, ``data`` lines)."""
    data = json.dumps(
        {"job_id": event.job_id, "type": event.type, "at": iso(event.at), "data": event.data,
         "id": event.id},
        separators=(",", ":"),
    )
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def is_terminal(event: Event) -> bool:
    """Whether the event ends its job (succeeded, failed, cancelled)."""
    try:
        return EventType(event.type).terminal
    except ValueError:
        return False


def encode(event: Event) -> Wire:
    """Encode an event once for every subscriber."""
    return Wire(event.id, event.job_id, is_terminal(event), format_event(event), event.tenant_id)
