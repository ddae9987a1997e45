"""The event hub: one tailer per server process feeds every SSE subscriber.

The tailer wakes on a notification (LISTEN/NOTIFY on PostgreSQL, a datagram socket on SQLite),
reads the new rows of the events table once (one read per wake-up for every stream), encodes
each batch once, and fans it out: written straight to the socket of every stream that has caught
up, or put on the bounded queue of one that has not (:mod:`conveyor.api.subscriber`). A
subscriber that falls too far behind is dropped; its client resumes with ``Last-Event-ID``.
No client ever polls the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from anyio import to_thread

from conveyor.api.subscriber import KEEPALIVE, Batch, Subscriber, Wire
from conveyor.api.views import iso
from conveyor.auth.caller import EVERY_TENANT
from conveyor.models import EventType
from conveyor.notify import EVENTS
from conveyor.store import Event, Store

log = logging.getLogger("conveyor.events")

KEEPALIVE_S = 15.0
#: How often direct streams are checked for a closed or lagging connection.
CHECK_S = 1.0
#: The event types that end a job (succeeded, failed, cancelled).
TERMINAL_TYPES = frozenset(t.value for t in EventType if t.terminal)


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
            if sub.direct:
                sub.end()
                continue
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
        last = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_S)
            beat = time.monotonic() - last >= KEEPALIVE_S
            if beat:
                last = time.monotonic()
            for sub in self._all():
                if beat:
                    sub.offer(KEEPALIVE)
                else:
                    sub.check()

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
            self.last_id = batch[-1].id
            self._fan_out(batch)
            if any(event.type in TERMINAL_TYPES for event in batch):
                # Only a job's end can put a webhook in the outbox: wake its delivery loop.
                self.changed.set()
            if len(batch) < 1000:
                return

    def _fan_out(self, events: list[Event]) -> None:
        """One batch to every subscriber: encoded and framed once, whatever their number, and
        only when someone takes it (most jobs have no stream open: their events are never
        encoded)."""
        wires = [encode(event) for event in events] if self.everything else None
        if wires:
            # A global stream carries only its tenant's events: one shared batch per tenant.
            per_tenant: dict[str | None, list[Wire]] = {}
            for wire in wires:
                per_tenant.setdefault(wire.tenant_id, []).append(wire)
            shared = {tenant: Batch(group) for tenant, group in per_tenant.items()}
            every: Batch | None = None
            for sub in list(self.everything):
                mine: Batch | None
                if sub.tenant_id == EVERY_TENANT:  # an admin's stream of every tenant
                    every = mine = every or Batch(wires)
                else:
                    mine = shared.get(sub.tenant_id)
                if mine is not None:
                    sub.deliver(mine)
        if self.by_job:
            per_job: dict[str, list[Wire]] = {}
            for i, event in enumerate(events):
                if event.job_id in self.by_job:
                    wire = wires[i] if wires is not None else encode(event)
                    per_job.setdefault(event.job_id, []).append(wire)
            for job_id, group in per_job.items():
                one = Batch(group)
                for sub in list(self.by_job.get(job_id, ())):
                    sub.deliver(one)


def format_event(event: Event) -> bytes:
    """One event as an SSE frame (``id``, ``event``, ``data`` lines)."""
    data = json.dumps(
        {"job_id": event.job_id, "type": event.type, "at": iso(event.at), "data": event.data,
         "id": event.id},
        separators=(",", ":"),
    )
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def encode(event: Event) -> Wire:
    """Encode an event once for every subscriber."""
    return Wire(event.id, event.job_id, event.type in TERMINAL_TYPES, format_event(event),
                event.tenant_id)
