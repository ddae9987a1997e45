"""408 for a request body that stalls while a route reads it.

While a route reads a request body, a client that sends nothing for ``idle_s`` gets 408
(problem+json, ``Connection: close``) and the route sees a disconnect, so it drops what it had
written. Streams that only wait for a disconnect (SSE) are not timed: the clock runs only until
the body is complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.protocol import problem_body
from conveyor.problems import PROBLEM


class BodyIdleTimeout:
    """408 when a request body stalls for ``idle_s`` while the route is reading it."""

    def __init__(self, app: ASGIApp, idle_s: float) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"body_done": False, "started": False, "timed_out": False}

        async def timed_receive() -> Message:
            if state["body_done"] or state["timed_out"]:
                return await receive()
            try:
                # asyncio.timeout, not wait_for: no task per body chunk (a third of the cost,
                # measured; it adds up over the ~16,000 chunks of a 1 GB upload).
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                state["timed_out"] = True
                if not state["started"]:
                    body = problem_body(408, "request_timeout",
                                        f"no request body bytes for {self.idle_s:g} s")
                    await send({"type": "http.response.start", "status": 408, "headers": [
                        (b"content-type", PROBLEM.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                    state["started"] = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if state["timed_out"]:
                return  # the 408 was the answer; the route's own reply goes nowhere
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)
