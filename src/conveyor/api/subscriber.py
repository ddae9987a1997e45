"""One SSE stream as the hub sees it: a bounded queue, or direct writes to its socket.

A stream starts on its queue (the replay and the first live events go through ASGI, one
task per stream). Once it has caught up (queue empty), it goes *direct*: the hub writes each
batch of events to the stream's socket itself, the same encoded (and chunk-framed) bytes for
every subscriber, with no per-stream task wake-up, no per-stream ASGI send and no per-stream
time-out scope. A direct stream whose socket falls behind (more than :data:`HIGH_WATER`
bytes not taken by the kernel) goes back to its queue, where the send time-out and the queue
bound drop it if it does not catch up (:mod:`conveyor.api.event_stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from functools import cached_property

from conveyor.api.protocol import ConnectionControl

QUEUE_SIZE = 2000
KEEPALIVE = b": keep-alive\n\n"
#: Bytes left in a direct stream's transport buffer before it falls back to its queue.
HIGH_WATER = 64 * 1024


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (as uvicorn frames a body write)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


KEEPALIVE_CHUNK = chunk(KEEPALIVE)


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


class Batch:
    """Events fanned out together: joined and framed once, for every direct subscriber."""

    def __init__(self, wires: list[Wire]) -> None:
        self.wires = wires
        self.first = wires[0].id
        self.last = wires[-1].id
        self.terminal = any(w.terminal for w in wires)

    @cached_property
    def data(self) -> bytes:
        return b"".join(w.data for w in self.wires)

    @cached_property
    def chunked(self) -> bytes:
        return chunk(self.data)


class Subscriber:
    """One SSE stream's bounded queue, or its socket once it has caught up."""

    def __init__(self, job_id: str | None, tenant_id: str | None = None) -> None:
        self.job_id = job_id
        #: A global stream's tenant: it is offered only that tenant's events.
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = False
        #: The last event id written directly (valid while direct).
        self.sent = 0
        self._direct: ConnectionControl | None = None
        #: Whether the direct socket's response is chunked (fixed once the response started).
        self._chunked = True
        #: Resolved when direct mode ends: True = the stream is over, False = back to the queue.
        self._woken: asyncio.Future[bool] | None = None

    @property
    def direct(self) -> bool:
        return self._direct is not None

    # ----------------------------------------------------------------- stream side

    def go_direct(self, control: ConnectionControl, sent: int) -> asyncio.Future[bool] | None:
        """Hand the socket to the hub, if nothing is queued; the future says how it ended."""
        if self.dropped or not self.queue.empty() or control.closing():
            return None
        self.sent = sent
        self._direct = control
        self._chunked = control.chunked
        self._woken = asyncio.get_running_loop().create_future()
        return self._woken

    def leave_direct(self) -> None:
        """The stream stops (cancelled, or woken): no more direct writes."""
        self._direct = None
        self._woken = None

    # ----------------------------------------------------------------- hub side

    def _wake(self, over: bool) -> None:
        woken, self._woken, self._direct = self._woken, None, None
        if woken is not None and not woken.done():
            woken.set_result(over)

    def _write(self, control: ConnectionControl, data: bytes, framed: bytes | None) -> None:
        control.write((framed if framed is not None else chunk(data)) if self._chunked else data)

    def _after_write(self, control: ConnectionControl) -> None:
        if control.closing():
            self._wake(True)
        elif control.buffered() > HIGH_WATER:
            self._wake(False)  # falling behind: the queue and its send time-out take over

    def deliver(self, batch: Batch) -> None:
        """Send a batch of events (ids increasing) to this stream."""
        if self.dropped:
            return
        control = self._direct
        if control is None:
            for wire in batch.wires:
                self.offer(wire)
            return
        if batch.first > self.sent and not (self.job_id is not None and batch.terminal):
            self._write(control, batch.data, batch.chunked if self._chunked else None)
            self.sent = batch.last
            self._after_write(control)
            return
        parts: list[bytes] = []
        for wire in batch.wires:
            if wire.id <= self.sent:
                continue
            parts.append(wire.data)
            self.sent = wire.id
            if self.job_id is not None and wire.terminal:
                self._write(control, b"".join(parts), None)
                self._wake(True)  # a job's stream ends with its terminal event
                return
        if parts:
            self._write(control, b"".join(parts), None)
            self._after_write(control)

    def offer(self, item: Wire | bytes) -> None:
        if self.dropped:
            return
        control = self._direct
        if control is not None:
            if isinstance(item, bytes):
                self._write(control, item, KEEPALIVE_CHUNK if item is KEEPALIVE else None)
                self._after_write(control)
            else:
                self.deliver(Batch([item]))
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

    def check(self) -> None:
        """Periodic: a direct stream whose connection closed, or fell behind, is woken."""
        control = self._direct
        if control is not None:
            self._after_write(control)

    def end(self) -> None:
        """End this stream now (whatever is queued is dropped; the client resumes by id)."""
        self.dropped = True
        if self._direct is not None:
            self._wake(True)
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
