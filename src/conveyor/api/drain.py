"""Graceful drain on SIGTERM (API.md, "System").

The first SIGTERM (or SIGINT) does not stop uvicorn at once. It starts a drain, while the server
keeps answering:

- ``/readyz`` and new uploads answer 503 ``draining`` (uploads and event streams with
  ``Retry-After``), so a load balancer sends traffic elsewhere;
- open event streams end at once (clients reconnect elsewhere with ``Last-Event-ID``);
- uploads already in flight finish and get their 202;
- the supervisor stops claiming; running jobs get ``CONVEYOR_DRAIN_S`` to finish, then are
  released (back to queued, not failed).

When no upload is in flight and the supervisor has stopped (or the drain time is over), uvicorn's
own shutdown runs. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from conveyor.errors import Draining

log = logging.getLogger("conveyor.drain")

#: How often the drain checks whether the uploads in flight and the jobs are done.
_POLL_S = 0.05
#: Time uvicorn still gives connections once the drain is over (beyond it, they are cut).
AFTER_DRAIN_S = 5


class Drain:
    """The drain state of one server process: shared by the routes and the signal handler."""

    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        #: :func:`time.monotonic` when the drain began, or None while serving normally.
        self.began: float | None = None
        #: Uploads being received now (they are let finish).
        self.uploads = 0

    @property
    def draining(self) -> bool:
        return self.began is not None

    def retry_after(self) -> int:
        """Seconds until this server is gone (at least 1): when a retry may find another."""
        left = self.drain_s - (time.monotonic() - self.began) if self.began is not None else 0
        return max(1, math.ceil(left))

    def refuse(self, what: str) -> None:
        """Raise :class:`Draining` (503) while draining."""
        if self.began is not None:
            raise Draining(f"the server is shutting down: {what} elsewhere or later",
                           retry_after=self.retry_after())

    @contextlib.contextmanager
    def upload(self) -> Iterator[None]:
        """Count an upload in flight (the drain waits for it)."""
        self.uploads += 1
        try:
            yield
        finally:
            self.uploads -= 1


async def drain(services: Any) -> None:
    """Run the drain of a server's :class:`~conveyor.api.services.Services` until it is over."""
    state: Drain = services.drain
    if state.began is None:
        state.began = time.monotonic()
    log.info("draining: uploads in flight finish, jobs get %.0f s", state.drain_s,
             extra={"event": "drain", "uploads": state.uploads})
    services.hub.end_all()
    supervisor = services.supervisor
    if supervisor is not None:
        supervisor.stop()  # its shutdown lets running jobs finish for drain_s, then releases
    deadline = state.began + state.drain_s
    while True:
        stopped = supervisor is None or supervisor.wait_stopped(0)
        if stopped and (state.uploads == 0 or time.monotonic() >= deadline):
            break
        await asyncio.sleep(_POLL_S)
    log.info("drained", extra={"event": "drain", "uploads": state.uploads})


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its own shutdown (see the module docstring)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def _services(self) -> Any:
        state = getattr(self.config.app, "state", None)
        return getattr(state, "services", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        svc = self._services()
        if (self._draining is not None or self._loop is None or svc is None
                or sig not in (signal.SIGTERM, signal.SIGINT)):
            # A second signal (or one before the app is up): uvicorn's own shutdown at once.
            super().handle_exit(sig, frame)
            return
        # A signal handler must not touch the loop's internals: schedule the drain on it.
        self._loop.call_soon_threadsafe(self._begin, svc)

    def _begin(self, svc: Any) -> None:
        if self._draining is not None:
            return
        svc.drain.began = time.monotonic()  # before any other request is handled
        self._draining = asyncio.ensure_future(self._drain_then_exit(svc))

    async def _drain_then_exit(self, svc: Any) -> None:
        try:
            await drain(svc)
        finally:
            self.should_exit = True
