"""Group commit: concurrent uploads share one transaction (and one WAL fsync) for their rows.

Each upload hands its new job to :meth:`GroupCommit.create` and awaits its own future. One
flusher task at a time takes everything queued and commits it with :meth:`Jobs.create_many` in a
thread; uploads arriving meanwhile wait for the next batch, so batches grow with the load and a
lone upload waits for nobody. A request is answered only once its own row is durable (202 still
means durable); an error of the batch reaches each member as its own exception, and a member
that loses an Idempotency-Key race gets the existing job without failing the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections.abc import Sequence

from anyio import CancelScope, to_thread

from conveyor.store.jobs import Jobs
from conveyor.store.records import Job, NewJob
from conveyor.telemetry.logs import REQUEST_ID

#: The most rows one transaction carries; the rest wait for the next one.
MAX_BATCH = 256

_Member = tuple[NewJob, str | None, "asyncio.Future[tuple[Job, bool]]"]


def _own(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one member (one exception object raised in many tasks at once
    would mix their tracebacks), caused by the original."""
    try:
        mine = copy.copy(exc)
    except Exception: # an exception type that cannot be copied: share it
        return exc
    mine.__cause__ = exc
    return mine


class GroupCommit:
    """Batches job inserts from the tasks of one event loop."""

    def __init__(self, jobs: Jobs, max_batch: int = MAX_BATCH) -> None:
        self._jobs = jobs
        self._max = max_batch
        self._queue: list[_Member] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Sizes of the batches committed (the last ones), for tests and metrics.
        self.batches = 0
        self.members = 0

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert ``new`` with whatever else is queued; returns (job, created) once durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Job, bool]] = loop.create_future()
        self._queue.append((new, REQUEST_ID.get(), future))
        if self._flusher is None:
            # A context of its own: the flusher serves many requests, it belongs to none.
            self._flusher = loop.create_task(self._flush(), name="conveyor-group-commit",
                                             context=contextvars.Context())
        # Not cancellable: the caller's cleanup depends on whether the row was committed.
        with CancelScope(shield=True):
            await asyncio.wait([future])
        return future.result()

    async def _flush(self) -> None:
        batch: list[_Member] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max:]
                await self._commit(batch)
        finally:
            self._flusher = None
            for _new, _rid, future in batch:  # the flusher itself was cancelled (shutdown)
                if not future.done():
                    future.set_exception(RuntimeError("the server stopped before the commit"))

    async def _commit(self, batch: Sequence[_Member]) -> None:
        members = [(new, request_id) for new, request_id, _future in batch]
        try:
            results: list[tuple[Job, bool] | BaseException] = list(
                await to_thread.run_sync(self._jobs.create_many, members)
            )
        except Exception as exc: # the batch's error is every member's error
            results = [_own(exc) for _ in batch]
        self.batches += 1
        self.members += len(batch)
        for (_new, _rid, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
