"""The SSE response: a send time-out per subscriber and a small socket send buffer.

A reader that stops reading (a frozen tab, a dead mobile link) would otherwise hold its stream
for ever, and the kernel would grow that socket's send buffer to megabytes. Here each stream's
socket gets a small fixed send buffer, and a write that the reader does not drain within the
time-out drops the stream: the connection is aborted (its unsent bytes freed at once) and the
subscriber unsubscribed. The client resumes with ``Last-Event-ID`` when it reads again.

Memory per subscriber is thus bounded: its hub queue (``subscriber.QUEUE_SIZE`` shared events), one
write of at most that many events, uvicorn's transport buffer and :data:`SEND_BUFFER`. A stream
the hub writes directly (caught up, :mod:`conveyor.api.subscriber`) goes back to its queue, and
so under this time-out, as soon as its transport holds more than ``subscriber.HIGH_WATER`` bytes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from conveyor.api.protocol import ConnectionControl, connection_control

log = logging.getLogger("conveyor.events")

#: The kernel send buffer asked for each event stream's socket (Linux doubles it).
SEND_BUFFER = 64 * 1024
#: After aborting a stalled stream, how long to wait for the server to see the disconnect.
_ABORT_WAIT_S = 5.0


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` whose every write must drain within ``send_timeout_s``."""

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout_s: float,
                 on_stalled: Callable[[], None] | None = None) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.send_timeout_s = send_timeout_s
        self.on_stalled = on_stalled
        self._control: ConnectionControl | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._control = connection_control(scope)
        if self._control is not None:
            self._control.limit_send_buffer(SEND_BUFFER)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        body = self.body_iterator
        try:
            async for chunk in body:
                data = chunk.encode(self.charset) if isinstance(chunk, str) else bytes(chunk)
                with anyio.move_on_after(self.send_timeout_s) as timer:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if timer.cancelled_caught:
                    await self._drop()
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # Unsubscribes at once (the generator's own finally), not when it is collected.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _drop(self) -> None:
        log.info("event stream dropped: the reader did not take its data for %.0f s",
                 self.send_timeout_s)
        if self.on_stalled is not None:
            self.on_stalled()
        if self._control is None:
            return  # not served by conveyor's protocol: the server closes it when we return
        self._control.abort()
        # The abort reaches the server as a disconnect, which ends this response (no
        # "response not completed" complaint); the wait is only a bound.
        with anyio.move_on_after(_ABORT_WAIT_S):
            await anyio.sleep_forever()

